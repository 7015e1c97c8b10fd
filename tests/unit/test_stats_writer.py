"""The drop-off counts' writer thread (convo.dialog.stats.Pending) outlives a flush that fails in a way
nobody foresaw: a dead writer would never write again and the pending counts would only grow."""
from __future__ import annotations

import threading
from collections import Counter

from convo.dialog import stats


def test_the_writer_keeps_writing_after_a_flush_that_raised(monkeypatch):
    monkeypatch.setattr(stats, "FLUSH_SECONDS", 0.01)
    pending = stats.Pending()
    calls: list[int] = []
    second = threading.Event()

    def flush():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("something nobody foresaw")
        second.set()
        threading.Event().wait()                # the writer stays here: nothing more after this test

    monkeypatch.setattr(pending, "flush", flush)
    pending.add(object(), "v1", Counter({("main", "menu", "entered"): 1}), days=30)
    assert second.wait(5), "the writer died with the first failed flush"
