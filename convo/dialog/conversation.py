"""Where one dialog is: the plain data the flows' shared machines act on, rebuilt every hop."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False)
class Conversation:
    """The model of a flow's ``transitions`` machine (its ``state`` is the machine state).

    ``to_dict``/``from_dict`` give the session's stored fields (:mod:`convo.dialog.sessions` keeps them
    beside the hop's own: version, reply, end, consumed input). ``secrets`` and ``trail`` live for one hop."""

    flow: str
    state: str
    vars: dict
    lang: str
    page: int = 0
    stack: list[list[str]] = field(default_factory=list)
    #: screens the current state's text was split into
    pages: int = 1
    #: variables holding secret answers (PINs) taken this hop: dropped before anything is saved
    secrets: set[str] = field(default_factory=set)
    #: (flow, state) entered this hop, in order, for convo.dialog.stats (the machines' ``after_state_change``)
    trail: list[tuple[str, str]] = field(default_factory=list)

    def enter(self, flow: str, state: str) -> None:
        """Move to ``state`` of ``flow`` outside the machine (a sub-flow call or return)."""
        self.flow, self.state = flow, state
        self.trail.append((flow, state))

    def to_dict(self) -> dict:
        return {"f": self.flow, "s": self.state, "vars": self.vars, "lang": self.lang, "pg": self.page,
                "np": self.pages, "stk": self.stack}

    @classmethod
    def from_dict(cls, data: dict) -> Conversation:
        return cls(data["f"], data["s"], data["vars"], data["lang"], data.get("pg", 0), data.get("stk") or [],
                   data.get("np", 1))

    def copy(self) -> Conversation:
        """An independent copy for one step (variables and call stack copied; ``secrets``/``trail`` fresh)."""
        return Conversation(self.flow, self.state, dict(self.vars), self.lang, self.page,
                            [list(f) for f in self.stack], self.pages)
