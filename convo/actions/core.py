"""Actions that need no outside system."""
from __future__ import annotations

from convo.actions import Context, action


@action("set_language", outcomes=("ok",))
def set_language(ctx: Context, lang: str) -> str:
    """Switch the conversation (and its later texts) to another language.

    ```yaml
    to_swahili:
      do: set_language
      with: {lang: sw}
      on: {ok: menu}
    ```
    """
    langs = ctx.services.flows.current.languages
    if lang in langs:
        ctx.lang = lang
    return "ok"
