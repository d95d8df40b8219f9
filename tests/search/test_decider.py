"""The worker loop's decision: the study is tidied at most every few seconds while trials start, and always
right before a worker decides to wait or to stop (so a dead trial's retry or a failed baseline is never
missed)."""

from __future__ import annotations

from autokd.search.backends import optuna_backend as ob


def test_tidy_is_throttled_while_asking_and_fresh_before_waiting_or_stopping(monkeypatch):
    clock = [100.0]
    tidied: list[float] = []
    steps = iter(["ask", "ask", "wait", "ask", "stop", "stop", "stop"])
    monkeypatch.setattr(ob.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(ob, "tidy", lambda study, cfg, space: tidied.append(clock[0]))
    monkeypatch.setattr(ob, "read_step", lambda study, trials: (next(steps), []))
    decide = ob.Decider(cfg=None, space=None, every_s=5.0)
    assert decide(None, 3) == "ask" and tidied == [100.0]  # the first decision tidies
    clock[0] = 101.0
    assert decide(None, 3) == "ask" and tidied == [100.0]  # within 5 s: no tidy
    clock[0] = 102.0
    # "wait" was decided on an old tidy: tidy now and decide again (the retry became waiting: "ask")
    assert decide(None, 3) == "ask" and tidied == [100.0, 102.0]
    clock[0] = 103.0
    assert decide(None, 3) == "stop" and tidied == [100.0, 102.0, 103.0]  # "stop" re-checked after a tidy
    clock[0] = 110.0
    assert decide(None, 3) == "stop" and tidied == [100.0, 102.0, 103.0, 110.0]  # due anyway: one tidy
