"""Conversations driven through the pure dialog step: no Redis, no database, no network.

A small flow set is written to a temporary folder and compiled like the real one, with actions of the
test's own; each test is a caller's conversation, one ``step`` per hop, carrying the conversation from
one hop to the next as the session store would (``to_dict``/``from_dict``)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convo.actions import Action, Context
from convo.dialog.channels import SMS, USSD, first_position, reduce_ussd_text
from convo.dialog.conversation import Conversation
from convo.dialog.engine import PIN_BY_SMS, step
from convo.flowlang.compiler import load_flowset
from convo.flowlang.kinds import REGISTRY, Kind
from convo.flowlang.spec import FlowValidationError

PHONE = "+254700000101"

FILES = {
    "channels.yaml": """
ussd:
  start: main
sms:
  keywords:
    BAL: {flow: main}
""",
    "locales/en.yaml": """
common:
  more: More
  back: Back
  invalid_choice: Invalid choice.
  invalid_input: Not a valid answer.
  expired: Expired.
  error: Something went wrong.
sms:
  reply_number: Reply with a number.
  pin_delete: Delete the SMS with your PIN.
""",
    "main.yaml": """
flow: main
states:
  menu:
    menu: "Hello {{ phone[-3:] }}"
    options:
      - label: Balance
        next: balance
      - label: Send money
        next: amount
      - label: Secret offer
        when: "vip is defined"
        next: bye
      - label: Terms
        next: terms
      - label: Check
        next: check
  balance:
    do: balance
    on: {ok: show, down: sorry}
  show:
    end: "Balance {{ balance }}"
  sorry:
    end: "Try later"
  amount:
    ask: "Amount?"
    validate: amount
    save: amount
    error: "Amount in shillings, e.g. 500"
    next: confirm
  confirm:
    flow: yes_no
    with: {question: "Send {{ amount }}?"}
    on: {yes: pin, no: bye}
  pin:
    ask: "PIN?"
    validate: pin
    save: pin
    next: send
  send:
    do: send
    with: {amount: "{{ amount }}"}
    on: {ok: sent, wrong_pin: bye}
  sent:
    route:
      - if: "amount | int > 1000"
        next: big
      - else: small
  big:
    end: "Sent a lot: {{ amount }}"
  small:
    end: "Sent {{ amount }}"
  terms:
    end: "TERMS\\n{{ 'All the words of a long contract text. ' * 12 }}"
  check:
    do: broken
    on: {ok: bye}
  bye:
    end: "Bye"
""",
    "yes_no.yaml": """
flow: yes_no
states:
  ask:
    menu: "{{ question }}"
    options:
      - label: "Yes"
        next: yes
      - label: "No"
        next: no
  yes:
    return: yes
  no:
    return: no
""",
}

SENT: list[dict] = []


def _balance(ctx):
    ctx.vars["balance"] = "1,250.00"
    return "ok"


def _send(ctx, amount):
    SENT.append({"amount": amount, "pin": ctx.vars["pin"]})        # a PIN is read, never templated
    return "ok" if ctx.vars["pin"] == "4321" else "wrong_pin"


def _broken(ctx):
    return "surprise"                     # not an outcome it declared


_balance.__module__ = "convo.actions.mifos"     # as if it read Mifos X: the step reports an audit event

ACTIONS = {
    "balance": Action("balance", _balance, ("ok", "down"), {}, ""),
    "send": Action("send", _send, ("ok", "wrong_pin"), {"amount": True}, ""),
    "broken": Action("broken", _broken, ("ok",), {}, ""),
}


@pytest.fixture(scope="module")
def flows(tmp_path_factory):
    root = tmp_path_factory.mktemp("flows")
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text.lstrip(), encoding="utf-8")
    return load_flowset(root, ACTIONS)


class Caller:
    """One phone talking to the flows, hop after hop, through ``step`` only."""

    def __init__(self, flows, channel=USSD):
        self.flows, self.channel = flows, channel
        self.saved: dict | None = None
        self.last = None

    def dial(self, *inputs: str):
        conv = Conversation("main", self.flows.flows["main"].spec.start, {"phone": PHONE}, "en")
        return self._step(conv, list(inputs), fresh=True)

    def answer(self, *inputs: str):
        return self._step(Conversation.from_dict(self.saved), list(inputs), fresh=False)

    def _step(self, conv, inputs, fresh):
        ctx = Context(vars=conv.vars, phone=PHONE, channel=self.channel.name, services=None, lang=conv.lang)
        self.last = step(self.flows, conv, inputs, self.channel, ctx, fresh=fresh)
        self.saved = self.last.conversation.to_dict()
        return self.last.text


def test_a_dial_shows_the_menu_without_the_options_whose_condition_fails(flows):
    grace = Caller(flows)
    assert grace.dial() == "Hello 101\n1. Balance\n2. Send money\n3. Terms\n4. Check"
    assert not grace.last.end and grace.saved["s"] == "menu"


def test_a_choice_runs_the_action_and_ends_with_its_answer(flows):
    grace = Caller(flows)
    grace.dial()
    assert grace.answer("1") == "Balance 1,250.00"
    assert grace.last.end
    assert grace.last.events == [{"action": "data.balance", "outcome": "ok",
                                  "detail": {"flow": "main", "account": None}}]
    assert grace.last.conversation.trail == [("main", "balance"), ("main", "show")]


def test_a_wrong_choice_says_so_above_the_same_menu(flows):
    grace = Caller(flows)
    grace.dial()
    assert grace.answer("9").startswith("Invalid choice.\nHello 101\n1. Balance")
    assert grace.saved["s"] == "menu" and not grace.last.end
    assert grace.answer("٢").startswith("Invalid choice.")        # an Arabic-Indic two is not "2"


def test_a_wrong_amount_shows_the_states_own_error(flows):
    grace = Caller(flows)
    grace.dial("2")
    assert grace.answer("lots") == "Amount in shillings, e.g. 500\nAmount?"


def test_a_sub_flow_asks_and_returns_its_outcome_then_the_pin_is_never_kept(flows):
    grace = Caller(flows)
    grace.dial()
    grace.answer("2")
    assert grace.answer("1500") == "Send 1500?\n1. Yes\n2. No"
    assert grace.saved["f"] == "yes_no" and grace.saved["stk"] == [["main", "confirm"]]
    assert grace.answer("1") == "PIN?"
    assert grace.saved["f"] == "main" and grace.saved["stk"] == []
    assert grace.answer("4321") == "Sent a lot: 1500"
    assert SENT[-1] == {"amount": "1500", "pin": "4321"}
    assert grace.last.secret_positions == [0]
    assert "pin" not in grace.saved["vars"] and "4321" not in repr(grace.saved)


def test_a_shortcut_dial_walks_the_same_way(flows):
    kevin = Caller(flows)
    assert kevin.dial("2", "700", "2") == "Bye"
    assert kevin.last.end


def test_a_pin_by_sms_ends_with_the_advice_to_delete_it(flows):
    amina = Caller(flows, SMS)
    assert amina.dial() == "Hello 101\n1. Balance\n2. Send money\n3. Terms\n4. Check\nReply with a number."
    amina.answer("2")
    amina.answer("300")
    amina.answer("1")
    assert amina.answer("4321") == "Sent 300\nDelete the SMS with your PIN."
    assert amina.saved["vars"][PIN_BY_SMS] is True and "pin" not in amina.saved["vars"]


def test_by_sms_the_problem_comes_first_and_nothing_is_paged(flows):
    amina = Caller(flows, SMS)
    amina.dial()
    assert amina.answer("7").startswith("Invalid choice.\nHello 101")
    terms = amina.answer("3")
    assert terms.startswith("TERMS\nAll the words") and "98." not in terms and amina.last.end


def test_a_long_end_text_pages_and_closes_on_any_answer_on_its_last_screen(flows):
    grace = Caller(flows)
    grace.dial()
    first = grace.answer("3")
    assert first.startswith("TERMS (1/") and first.endswith("98. More") and not grace.last.end
    pages = [first]
    while not pages[-1].endswith("0. Back") or pages[-1].endswith("98. More"):
        pages.append(grace.answer("98"))
        assert len(pages) < 10 and not grace.last.end
    assert len(pages) == grace.saved["np"] and all(len(p) + 4 <= 160 for p in pages)
    assert grace.answer("0") == pages[-2]                    # back a screen
    grace.answer("98")
    assert grace.answer("ok") == pages[-1].rsplit("\n", 1)[0]   # the session closes: no "0. Back"
    assert grace.last.end


def test_a_flow_that_fails_at_run_time_ends_with_the_common_error(flows):
    grace = Caller(flows)
    grace.dial()
    assert grace.answer("4") == "Something went wrong."
    assert grace.last.end and grace.last.errored


def test_the_step_leaves_the_conversation_it_was_given_alone(flows):
    conv = Conversation("main", "menu", {"phone": PHONE}, "en")
    before = conv.to_dict()
    ctx = Context(vars=conv.vars, phone=PHONE, channel="ussd", services=None)
    out = step(flows, conv, ["1"], "ussd", ctx)
    assert conv.to_dict() == before and conv.trail == []
    assert out.conversation.state == "show" and out.conversation.vars["balance"] == "1,250.00"


# ------------------------------------------------------------------ a new kind is one class
class Pause(Kind):
    """``pause: <text>``: shows the text; any answer goes on to ``next:``."""

    key = "pause"
    keys = frozenset({"next"})
    waits_for_input = True

    def parse(self, st, p):
        st.text = p.text("pause")
        st.next = p.target("next")

    def compile(self, st, b):
        b.transition("go", st.name, st.next)

    def var_edges(self, st, env, flow):
        yield st.next, env

    def feed(self, turn, cf, st, raw):
        turn.fire(cf, "go")


def test_a_new_kind_registered_by_its_key_parses_compiles_runs_and_renders(tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY, "pause", Pause())
    for name in ("channels.yaml", "locales/en.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(FILES[name].lstrip(), encoding="utf-8")
    (tmp_path / "main.yaml").write_text("""
flow: main
states:
  note:
    pause: "Your number ends in {{ phone[-3:] }}. Any key goes on."
    next: bye
  bye:
    end: "Bye"
""", encoding="utf-8")
    caller = Caller(load_flowset(tmp_path, ACTIONS))
    assert caller.dial() == "Your number ends in 101. Any key goes on."
    assert caller.answer("x") == "Bye" and caller.last.end
    (tmp_path / "main.yaml").write_text("flow: main\nstates:\n  note:\n    pause: Hi\n    nxt: bye\n",
                                        encoding="utf-8")
    with pytest.raises(FlowValidationError) as e:
        load_flowset(tmp_path, ACTIONS)
    assert "unknown key 'nxt' in a pause state (allowed: next, note)" in str(e.value)


# ------------------------------------------------------------------ USSD input reduction
answers = st.lists(st.text(alphabet="0123456789#", min_size=1, max_size=6), min_size=1, max_size=8)


@given(answers)
def test_ussd_hops_each_take_exactly_their_newest_answer_and_know_where_it_is(history):
    text, consumed = "", 0
    for i, answer in enumerate(history):
        text = answer if not text else f"{text}*{answer}"
        assert USSD.inputs(text, consumed) == [answer] == reduce_ussd_text(text, consumed)
        assert first_position(text, consumed) == i
        assert text.split("*")[USSD.first_position(text, consumed)] == answer
        assert USSD.inputs(text, len(text)) is None           # a retried callback: nothing new
        consumed = USSD.consumed(text)


@given(answers)
def test_a_shortcut_dial_brings_every_answer_and_sms_brings_one(history):
    text = "*".join(history)
    assert USSD.inputs(text, None) == history
    assert SMS.inputs(text, None) == [text] and SMS.consumed(text) == 0
