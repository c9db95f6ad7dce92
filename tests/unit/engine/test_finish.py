"""A step's success: joins counted once, their segment published once, the run's end."""

from __future__ import annotations

from orchestrator.status import RunStatus
from tests.unit.engine.harness import Engine, calls
from tests.unit.engine.steps import JOIN, TWO_SINKS


def test_a_join_is_published_once_when_its_last_parent_succeeds(engine: Engine) -> None:
    # Given a join of a and b (b is also followed by d alone)
    run = engine.start(JOIN, {"start": 2})
    first = engine.take()
    # When b succeeds, then a, then b's message is delivered again
    first["b"].execute()
    after_b = engine.take()
    first["a"].execute()
    first["b"].execute()
    after_a = engine.take()
    # Then d followed b at once, the join waited for a, and was published once; b's copy,
    # seeing d not delivered yet, moved its chain on again (d is published twice, runs once)
    assert list(after_b) == ["d"]
    assert sorted(after_a) == ["c", "d"]
    for request in [*after_b.values(), *after_a.values()]:
        request.execute()
    assert run.wait() == {"c": 4, "d": 3}
    assert sorted(calls(run)) == [("a", 1), ("b", 1), ("c", 1), ("d", 1)]


def test_a_copy_of_a_step_whose_successors_were_delivered_moves_nothing_on(
    engine: Engine,
) -> None:
    # Given a join of a and b, b followed by d, all delivered
    run = engine.start(JOIN, {"start": 2})
    first = engine.take()
    first["b"].execute()
    first["a"].execute()
    following = engine.take()
    for request in following.values():
        request.execute()
    assert run.wait() == {"c": 4, "d": 3}
    # When a copy of b is delivered (a recovery published it again)
    first["b"].execute()
    # Then nothing is published again (what follows b saw its success) and nothing runs twice
    assert engine.take() == {}
    assert sorted(calls(run)) == [("a", 1), ("b", 1), ("c", 1), ("d", 1)]


def test_a_run_with_two_sinks_ends_when_the_last_succeeds(engine: Engine) -> None:
    run = engine.start(TWO_SINKS, {"start": 1})
    engine.take()["a"].execute()
    sinks = engine.take()

    sinks["b"].execute()
    assert run.status() == RunStatus.RUNNING
    sinks["c"].execute()
    assert run.status() == RunStatus.SUCCEEDED
    assert run.wait() == {"b": 2, "c": 2}
