"""USSD screens: :func:`paginate_menu`, :func:`paginate_text` (``98. More`` / ``0. Back`` on screens of at
most 160 characters), :func:`fit_ussd`, :func:`usable_screen`."""
from __future__ import annotations

from collections import deque


def usable_screen(prefix: str = "CON ", limit: int = 160) -> int:
    """Characters left for the body of a USSD screen after ``prefix``."""
    return limit - len(prefix)


_TEXT, _OPTION = 0, 1


def fit_ussd(body: str, *, prefix: str = "END ", limit: int = 160) -> bool:
    """Whether ``prefix + body`` fits one USSD screen of ``limit`` characters."""
    return len(prefix) + len(body) <= limit


def _truncate(line: str, cap: int) -> str:
    if len(line) <= cap:
        return line
    if cap <= 3:
        return line[:cap]
    return line[: cap - 3].rstrip() + "..."


def _fill(items: deque, cap: int) -> list[str]:
    """Take lines from ``items`` for one page of at most ``cap`` characters.

    Text lines are kept whole when they fit a page, else split at spaces, else
    hard-split; options are never split (one longer than ``cap`` is truncated
    with ``...``). The page is never left empty."""
    out: list[str] = []
    used = 0
    while items:
        kind, line = items[0]
        sep = 1 if out else 0
        room = cap - used - sep
        if len(line) <= room:
            out.append(line)
            used += sep + len(line)
            items.popleft()
            continue
        if kind == _OPTION or len(line) <= cap:
            if out:
                break  # whole line on the next page
            out.append(_truncate(line, cap))  # only options can get here
            items.popleft()
            break
        # a text line longer than a page: split at the last space that fits
        cut = line.rfind(" ", 0, room + 1) if room > 0 else -1
        head = line[:cut].rstrip(" ") if cut > 0 else ""
        if not head:
            if out:
                break
            head, rest = line[:cap], line[cap:]  # one very long word
        else:
            rest = line[cut + 1:]
        rest = rest.lstrip(" ")
        out.append(head)
        if rest:
            items[0] = (kind, rest)
        else:
            items.popleft()
        break
    return out


def _paginate(items: list[tuple[int, str]], budget: int, more_label: str, back_label: str) -> list[str]:
    if len("\n".join(line for _, line in items)) <= budget:
        return ["\n".join(line for _, line in items)]
    more, back = 1 + len(more_label), 1 + len(back_label)
    if budget - more - back < 1:
        raise ValueError("screen too small for the navigation lines")
    # trailing spaces are invisible; trailing blank lines would make an empty page
    items = [(k, line.rstrip() if k == _TEXT else line) for k, line in items]
    while items and items[-1][0] == _TEXT and not items[-1][1]:
        items.pop()
    queue = deque(items)
    pages: list[str] = []
    while queue:
        first = not pages
        cap_last = budget - (0 if first else back)
        # leading blank lines of a page carry no information
        while queue and queue[0][0] == _TEXT and not queue[0][1]:
            queue.popleft()
        if not queue:
            break
        if len("\n".join(line for _, line in queue)) <= cap_last:
            body = [line for _, line in queue]
            queue.clear()
        elif len(queue) == 1 and queue[0][0] == _OPTION:
            body = [_truncate(queue.popleft()[1], cap_last)]  # last item, alone
        else:
            body = _fill(queue, cap_last - more)
            while len(body) > 1 and not body[-1]:
                body.pop()
        nav = ([] if first else [back_label]) + ([more_label] if queue else [])
        pages.append("\n".join(body + nav))
    return pages


def _text_items(text: str) -> list[tuple[int, str]]:
    return [(_TEXT, line) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]


def _fits(items: list[tuple[int, str]], budget: int) -> bool:
    return len("\n".join(line for _, line in items)) <= budget


#: a first line this short may head every page of a long text
HEADING_MAX = 40


def _with_heading(items: list[tuple[int, str]], budget: int, more_label: str, back_label: str) -> list[str] | None:
    """Pages that each start with the text's first line and the page number, ``Akiba *0901 (2/3)``;
    None when the first line is no heading (empty, longer than :data:`HEADING_MAX`, or alone)."""
    head = items[0][1].strip().rstrip(":").rstrip() if items else ""
    if not head or len(head) > HEADING_MAX or len(items) < 2:
        return None
    rest = items[1:]
    for width in (1, 2):                         # room for "(9/9)", then for "(99/99)"
        room = budget - len(head) - len(" (/)") - 2 * width - 1
        try:
            pages = _paginate(rest, room, more_label, back_label)
        except ValueError:
            return None
        if len(str(len(pages))) <= width:
            n = len(pages)
            return [f"{head} ({i}/{n})\n{page}" for i, page in enumerate(pages, 1)]
    return None


def paginate_text(text: str, *, limit: int = 160, prefix_len: int = 4,
                  more_label: str = "98. More", back_label: str = "0. Back",
                  error: str | None = None, heading: bool = False) -> list[str]:
    """Split ``text`` into USSD page bodies (without the ``CON ``/``END `` prefix).

    A text that fits is one page with no navigation. Otherwise pages break at
    line breaks (a line that fits a page is never split), long lines at spaces,
    words longer than a page are hard-split. Page 1 ends with ``more_label``,
    middle pages with ``back_label`` and ``more_label``, the last with
    ``back_label``. Each page + ``prefix_len`` <= ``limit``. Whitespace at page
    breaks and blank lines at the start of a page are dropped; no word is lost.

    ``heading``: when the text needs more than one page and its first line is
    short (a heading such as ``Akiba *0901``), every page starts with that line
    and its number, ``Akiba *0901 (2/2)``.

    ``error`` (an answer that was refused, e.g. "Enter an amount in numbers")
    comes first, and the question stays on the first screen: when error and
    text do not fit one page, the text's first lines are left out (the caller
    has just seen them) until the error and the last line, the question, fit.
    """
    budget = limit - prefix_len
    items = _text_items(text)
    if error:
        err = _text_items(error)
        for start in range(len(items)):
            if _fits(err + items[start:], budget):
                return ["\n".join(line for _, line in err + items[start:])]
        items = err + items
    elif heading and not _fits(items, budget):
        pages = _with_heading(items, budget, more_label, back_label)
        if pages:
            return pages
    return _paginate(items, budget, more_label, back_label)


def paginate_menu(title: str, options: list[str], *, limit: int = 160, prefix_len: int = 4,
                  more_label: str = "98. More", back_label: str = "0. Back",
                  error: str | None = None) -> list[str]:
    """Split a menu into USSD page bodies (without the ``CON `` prefix).

    ``options`` are numbered lines (``"1. Balance"``). If everything fits: one
    page, no navigation. Otherwise page 1 = title + as many options as fit +
    ``more_label``; later pages = options + ``back_label`` (+ ``more_label`` if
    more remain). The title appears only at the start (a title too long for a
    page is wrapped like :func:`paginate_text`, options follow it). Options are
    never split across pages; an option longer than a whole page is truncated
    with ``...``. Each page + ``prefix_len`` <= ``limit``.

    ``error`` (e.g. "Invalid choice") comes first; when error, title and options
    do not fit one page, the title is left out (the caller has just read it) so
    that the first options stay on the first screen.
    """
    budget = limit - prefix_len
    title_items = _text_items(title) if title else []
    opts = [(_OPTION, o) for o in options]
    if error:
        err = _text_items(error)
        items = err + title_items + opts
        if not _fits(items, budget):
            items = err + opts
        return _paginate(items, budget, more_label, back_label)
    return _paginate(title_items + opts, budget, more_label, back_label)
