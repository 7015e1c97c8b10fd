"""What sending cost: messages, segments and cost per gateway and destination country for a month.

A message counts in the month it was handed to a gateway (``sent_at``), whatever its delivery report
said later (the provider charged it). Its cost is the routes file's price per segment x segments, in
the route's currency, written by the worker when it was sent (:mod:`convo.notify.routing`); messages sent
without a routes file have no price (``cost`` empty). ``convo report costs [--month YYYY-MM]`` prints
these figures and ``/metrics`` shows the current month's (:class:`CostCollector`).
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

from convo.store.db import OutboxMessage

log = logging.getLogger(__name__)

__all__ = ["CostRow", "cost_rows", "format_costs", "month_bounds"]


@dataclass(frozen=True)
class CostRow:
    gateway: str
    country: str
    currency: str  #: "" when the messages had no price
    messages: int
    segments: int
    cost: Decimal | None


def month_bounds(month: str | None = None, *, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """``"2026-11"`` -> (Nov 1 00:00 UTC, Dec 1 00:00 UTC); None: the current UTC month. ValueError if malformed."""
    if month is None:
        now = now or dt.datetime.now(dt.timezone.utc)
        year, mon = now.year, now.month
    else:
        m = re.fullmatch(r"(\d{4})-(\d{2})", month.strip())
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise ValueError(f"month must be YYYY-MM (e.g. 2026-11), not {month!r}")
        year, mon = int(m.group(1)), int(m.group(2))
    start = dt.datetime(year, mon, 1, tzinfo=dt.timezone.utc)
    end = dt.datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=dt.timezone.utc)
    return start, end


def cost_rows(engine_or_conn, month: str | None = None, *, now: dt.datetime | None = None) -> list[CostRow]:
    """Messages, segments and cost per (gateway, country, currency) sent in ``month`` (one indexed query)."""
    start, end = month_bounds(month, now=now)
    o = OutboxMessage.__table__.c
    segs = sa.func.coalesce(o.parts, o.segments)
    q = (sa.select(o.gateway, o.country, o.cost_currency, sa.func.count(), sa.func.sum(segs),
                   sa.func.sum(o.cost_amount))
         .where(o.sent_at >= start, o.sent_at < end)
         .group_by(o.gateway, o.country, o.cost_currency)
         .order_by(o.gateway, o.country, o.cost_currency))
    if isinstance(engine_or_conn, sa.engine.Engine):
        with engine_or_conn.connect() as conn:
            rows = conn.execute(q).all()
    else:
        rows = engine_or_conn.execute(q).all()
    return [CostRow(g or "?", c or "?", cur or "", int(n), int(s or 0),
                    None if amount is None else Decimal(str(amount)))
            for g, c, cur, n, s, amount in rows]


def _fmt(d: Decimal | None) -> str:
    if d is None:
        return "-"
    q = d.quantize(Decimal("0.0001"))
    return f"{q:f}".rstrip("0").rstrip(".") if "." in f"{q:f}" else f"{q:f}"


def format_costs(rows: list[CostRow], month_label: str) -> str:
    """The table ``convo report costs`` prints, with a total per currency."""
    lines = [f"SMS costs {month_label} (sent; price per segment from the routes file)"]
    if not rows:
        return lines[0] + "\nno messages sent\n"
    head = ("gateway", "country", "messages", "segments", "cost")
    body = [(r.gateway, r.country, str(r.messages), str(r.segments),
             f"{_fmt(r.cost)} {r.currency}".strip() if r.cost is not None else "-") for r in rows]
    totals: dict[str, list] = {}
    for r in rows:
        t = totals.setdefault(r.currency, [0, 0, None])
        t[0] += r.messages
        t[1] += r.segments
        if r.cost is not None:
            t[2] = (t[2] or Decimal(0)) + r.cost
    for cur, (n, s, c) in sorted(totals.items()):
        cost = f"{_fmt(c)} {cur}".strip() if c is not None else "-"
        body.append(("total", cur or "(no price)", str(n), str(s), cost))
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    lines.append(fmt.format(*head))
    lines += [fmt.format(*row) for row in body]
    return "\n".join(lines) + "\n"


class CostCollector:
    """This calendar month's (UTC) messages, segments and cost per gateway and country, read at scrape time
    (``ix_outbox_sent_at``); the same query as ``convo report costs`` (:func:`convo.notify.costs.cost_rows`)."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from convo.metrics import SMS_MONTH_COST, SMS_MONTH_MESSAGES, SMS_MONTH_SEGMENTS

        msgs = GaugeMetricFamily(SMS_MONTH_MESSAGES, "SMS handed to a gateway this month (UTC)",
                                 labels=["gateway", "country"])
        segs = GaugeMetricFamily(SMS_MONTH_SEGMENTS, "SMS segments handed to a gateway this month (UTC)",
                                 labels=["gateway", "country"])
        cost = GaugeMetricFamily(SMS_MONTH_COST, "SMS cost this month (UTC), routes-file price x segments",
                                 labels=["gateway", "country", "currency"])
        try:
            rows = cost_rows(self.engine)
        except Exception as e:  # noqa: BLE001 - OutboxCollector reports the database as unreadable
            log.warning("cost metrics unavailable: %s", str(e).splitlines()[0][:200])
            return []
        count: dict[tuple, list] = {}
        for r in rows:
            c = count.setdefault((r.gateway, r.country), [0, 0])
            c[0] += r.messages
            c[1] += r.segments
            if r.cost is not None:
                cost.add_metric([r.gateway, r.country, r.currency], float(r.cost))
        for (g, c), (n, s) in count.items():
            msgs.add_metric([g, c], n)
            segs.add_metric([g, c], s)
        return [msgs, segs, cost]
