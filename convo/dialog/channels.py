"""What differs between USSD and SMS, in one place each: how a conversation is keyed and how long it
lives, what a message's text means as input, how a screen is cut into what the phone shows.

USSD: one gateway session per dial; the gateway sends the whole dialog's input so far (``1*2*1234``,
reduced here to what is new); screens are 160 characters, longer ones paged with "98. More"/"0. Back";
when Redis or the database is down the caller still gets an answer. SMS: one conversation per phone;
a message is one input; a screen is one message; a PIN typed into an SMS stays in the phone's Sent
folder, so the dialog's last message says to delete it (``sms.pin_delete``).
"""
from __future__ import annotations

from typing import Any

from convo.text import paging

USSD_LIMIT = 160


def first_position(text: str, consumed: int | None) -> int:
    """Index (in ``text.split('*')``) of the first input this hop takes from ``text``."""
    if not consumed:
        return 0
    return text[:consumed].count("*") + 1


def reduce_ussd_text(text: str, consumed: int | None) -> list[str] | None:
    """What is new in Africa's Talking's cumulative ``text`` (``1*2*1234``).

    ``consumed`` is how many characters of it earlier hops used (None for a new
    session). Returns the new inputs in order, ``[]`` for a fresh dial, or None
    when the callback repeats one already answered.
    """
    if consumed is None:                       # first hop: "" or a shortcut dial like *384*12*1#
        return [p for p in text.split("*")] if text else []
    if len(text) == consumed:
        return None
    if len(text) > consumed:
        rest = text[consumed:]
        if consumed:
            if not rest.startswith("*"):
                return [text.rsplit("*", 1)[-1]]   # history rewritten by the gateway: take the newest part
            rest = rest[1:]
        return [rest]
    return [text.rsplit("*", 1)[-1]]


class Channel:
    """The SMS behaviour; :class:`Ussd` overrides what USSD does differently."""

    name = "sms"
    #: the gateway's text is the whole dialog's input so far (USSD), not one message
    cumulative = False
    #: Redis or the database down: answer the caller ``common.unavailable`` (else raise; the gateway retries)
    answers_when_down = False
    #: a secret typed here stays on the phone (an SMS in the Sent folder): the last message says to delete it
    secret_stays_on_phone = True

    def session_key(self, msg: Any) -> str:
        """The conversation's key in the session store."""
        return f"{msg.channel}:{msg.phone}"

    def ttl(self, settings: Any) -> int:
        """Seconds a conversation waits for the next message."""
        return settings.sms_session_timeout

    def inputs(self, text: str, consumed: int | None) -> list[str] | None:
        """The inputs a message brings (see :func:`reduce_ussd_text` for USSD)."""
        return [text]

    def first_position(self, text: str, consumed: int | None) -> int:
        """Where this hop's first input is in ``text`` (positions of secrets, for redacting logs)."""
        return 0

    def consumed(self, text: str) -> int:
        """How much of ``text`` this hop used up (stored as ``n``; see :meth:`inputs`)."""
        return 0

    def menu_pages(self, screen: Any, lines: list[str]) -> list[str]:
        """A menu's screen(s): the title (after any problem), the numbered lines, the reply hint."""
        hint = screen.fs.common.get("sms.reply_number")
        tail = [hint.render(screen.lang, screen.tctx)] if hint else []
        return ["\n".join([self._body(screen)] + lines + tail)]

    def text_pages(self, screen: Any, heading: bool) -> list[str]:
        """A text's screen(s)."""
        return [self._body(screen)]

    @staticmethod
    def _body(screen: Any) -> str:
        return screen.problem + "\n" + screen.body if screen.problem else screen.body


class Ussd(Channel):
    name = "ussd"
    cumulative = True
    answers_when_down = True
    secret_stays_on_phone = False

    def session_key(self, msg: Any) -> str:
        """The gateway's session id *and* the phone, so a callback with another phone number and the same
        ``sessionId`` is another, new session: it never continues this one, never gets its stored reply,
        never takes its lock."""
        return f"ussd:{msg.gateway}:{msg.session_id}:{msg.phone}"

    def ttl(self, settings: Any) -> int:
        return settings.ussd_session_ttl

    def inputs(self, text: str, consumed: int | None) -> list[str] | None:
        return reduce_ussd_text(text, consumed)

    def first_position(self, text: str, consumed: int | None) -> int:
        return first_position(text, consumed)

    def consumed(self, text: str) -> int:
        return len(text)

    def menu_pages(self, screen: Any, lines: list[str]) -> list[str]:
        more, back = screen.nav_labels()
        return paging.paginate_menu(screen.body, lines, limit=USSD_LIMIT, more_label=more, back_label=back,
                                    error=screen.problem)

    def text_pages(self, screen: Any, heading: bool) -> list[str]:
        more, back = screen.nav_labels()
        return paging.paginate_text(screen.body, limit=USSD_LIMIT, more_label=more, back_label=back,
                                    error=screen.problem, heading=heading)


USSD, SMS = Ussd(), Channel()
CHANNELS = {c.name: c for c in (USSD, SMS)}


def channel(name: str) -> Channel:
    """The channel called ``name``; any other than ``ussd`` behaves as SMS (as gateways and the studio expect)."""
    return CHANNELS.get(name, SMS)
