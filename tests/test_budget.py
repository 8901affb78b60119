"""The budget plan: the whole budget used, explore cheap, exploit long, typed stop reasons."""

from __future__ import annotations

import pytest

from automodel.budget import FINALIZE_RESERVE_S, BudgetPlan, budget_use
from automodel.settings import RunSettings


def _settings(**kw) -> RunSettings:
    return RunSettings.build(data="demo", out="runs/x", **kw)


def _attempt(wall: float, train: float) -> dict:
    return {"wall_s": wall, "train_s": train}


def test_no_default_attempt_cap_and_iterations_is_an_extra_cap():
    assert _settings().max_attempts is None
    assert _settings(iterations=3).max_attempts == 4
    plan = BudgetPlan(_settings(time_budget_s=300, iterations=1), 10.0, [_attempt(30, 20), _attempt(30, 20)])
    reason = plan.stop_reason(at_boundary=True, best=0.9, tokens_used=0)
    assert reason is not None and reason.kind == "attempts"
    assert BudgetPlan(_settings(time_budget_s=300), 10.0, [_attempt(30, 20)] * 9).stop_reason(
        at_boundary=True, best=0.9, tokens_used=0) is None


def test_exploration_keeps_the_final_reserve_and_the_final_gets_what_is_left():
    s = _settings(time_budget_s=900)
    history = [_attempt(40, 30)]  # measured overhead 10 s
    early = BudgetPlan(s, 100.0, history)
    assert not early.final_due()
    explore = early.candidate_budget_s("explore")
    assert explore == pytest.approx(900 / 8)
    # Late: exploring would eat the final reserve, so the final is due and gets everything left.
    late = BudgetPlan(s, 900 - 0.4 * 900 - FINALIZE_RESERVE_S, history)
    assert late.final_due()
    final = late.candidate_budget_s("final")
    assert final == pytest.approx(late.remaining_s - FINALIZE_RESERVE_S - 10.0)


def test_the_last_candidate_absorbs_a_tail_too_small_for_another():
    s = _settings(time_budget_s=300, strategy="paper")
    assert s.candidate_budget_s is None
    history = [_attempt(60, 50)]  # overhead 10 s
    plan0 = BudgetPlan(s, 0.0, history)
    assert plan0.explore_budget_s() == pytest.approx(0.8 * 300 / 7 - s.candidate_overhead_s)
    # 40 s left: 20 s after overhead and the final scoring; a 14 s candidate would leave 6 s,
    # less than another candidate needs (8 s of training + 10 s overhead): take it all.
    plan = BudgetPlan(s, 300 - 40, history)
    budget = plan.candidate_budget_s("explore")
    assert budget == pytest.approx(40 - FINALIZE_RESERVE_S - 10.0)
    # After that candidate the idle tail is the finalize reserve only.
    after = BudgetPlan(s, 300 - FINALIZE_RESERVE_S - 1, history)
    reason = after.stop_reason(at_boundary=True, best=None, tokens_used=0)
    assert reason is not None and reason.kind == "time"


def test_explicit_candidate_budget_caps_exploration_only():
    s = _settings(time_budget_s=600, candidate_budget_s=30)
    plan = BudgetPlan(s, 0.0, [])
    assert plan.candidate_budget_s("explore") == 30
    assert plan.candidate_budget_s("final") > 500
    # Even near the end an explicit cap holds for exploration (only the final phase takes the rest).
    late = BudgetPlan(_settings(time_budget_s=60, candidate_budget_s=5), 0.0, [])
    assert late.candidate_budget_s("explore") == 5


def test_paper_strategy_divides_the_budget_into_equal_shares():
    s = _settings(time_budget_s=700, strategy="paper")
    plan = BudgetPlan(s, 0.0, [])
    assert not plan.final_due() and plan.final_reserve_s() == 0
    assert plan.explore_budget_s() == pytest.approx(0.8 * 700 / 7 - s.candidate_overhead_s)


def test_overhead_is_measured_from_the_attempts():
    plan = BudgetPlan(_settings(), 0.0, [_attempt(30, 20), _attempt(50, 20), _attempt(35, 20)])
    assert plan.overhead_s() == pytest.approx(15.0)


def test_a_one_time_feature_extraction_is_not_counted_as_overhead():
    # The first attempt paid 140 s for extracting features: the next ones will not.
    plan = BudgetPlan(_settings(time_budget_s=300), 150.0, [{"wall_s": 150.0, "train_s": 7.0, "extract_s": 135.0}])
    assert plan.overhead_s() == pytest.approx(8.0)
    assert plan.stop_reason(at_boundary=True, best=0.95, tokens_used=0) is None


def test_after_a_head_on_cached_features_one_more_head_fits_a_short_tail():
    # sports-12 at 60 s (seed 0 at 3db5e35): extraction and two heads took 38 s; 22 s were left, the
    # heads trained 2 and 5 s with 5 s of overhead, and the run stopped: "less than one more candidate".
    head = {"wall_s": 10.2, "train_s": 5.1, "extract_s": 0.0, "features": "efficientnet_lite0@160",
            "status": "improved", "fidelity": "explore"}  # fmt: skip
    first = {**head, "wall_s": 27.7, "train_s": 2.0, "extract_s": 20.8}
    s = _settings(time_budget_s=60)
    plan = BudgetPlan(s, 38.0, [first, head])
    assert plan.train_floor_s() == pytest.approx(5.1)
    assert plan.stop_reason(at_boundary=True, best=0.9, tokens_used=0) is None
    assert plan.train_floor_s() <= plan.candidate_budget_s() <= plan.usable_s() - plan.overhead_s() + 1e-9
    # A final-phase candidate gets what is left, not min_candidate_s (more than is left here).
    assert plan.candidate_budget_s("final") == pytest.approx(plan.usable_s() - plan.overhead_s())
    # The same tail after a candidate trained on images stops: it needs min_candidate_s of training.
    images = [{**a, "features": None} for a in (first, head)]
    assert BudgetPlan(s, 38.0, images).stop_reason(at_boundary=True, best=0.9, tokens_used=0).kind == "time"
    # A crashed head says nothing about what the next one needs.
    crashed = BudgetPlan(s, 38.0, [first, {**head, "status": "crashed"}])
    assert crashed.train_floor_s() == s.min_candidate_s


def test_target_and_tokens_stop_typed():
    s = _settings(time_budget_s=900, target=0.9, token_budget=100)
    plan = BudgetPlan(s, 0.0, [])
    assert plan.stop_reason(at_boundary=False, best=0.95, tokens_used=0) is None  # target only at a boundary
    target = plan.stop_reason(at_boundary=True, best=0.95, tokens_used=0)
    assert target is not None and target.kind == "target"
    tokens = plan.stop_reason(at_boundary=False, best=None, tokens_used=100)
    assert tokens is not None and tokens.kind == "tokens"


def test_unchanged_retrains_without_gain_end_the_run_as_exhausted():
    s = _settings(time_budget_s=900)
    change = {"wall_s": 9, "train_s": 3, "fidelity": "explore", "knobs": {"LR": 0.001}, "status": "discarded"}
    retrain = {"wall_s": 9, "train_s": 3, "fidelity": "final", "knobs": {}, "status": "discarded"}
    gained = {**retrain, "status": "improved"}
    assert BudgetPlan(s, 300.0, [change, retrain]).stop_reason(at_boundary=True, best=0.9, tokens_used=0) is None
    # A retrain that improved, or a change in between, resets the count.
    for history in ([retrain, gained], [retrain, change]):
        assert BudgetPlan(s, 300.0, history).stop_reason(at_boundary=True, best=0.9, tokens_used=0) is None
    plan = BudgetPlan(s, 300.0, [change, retrain, retrain])
    assert plan.stop_reason(at_boundary=False, best=0.9, tokens_used=0) is None  # only at an attempt boundary
    reason = plan.stop_reason(at_boundary=True, best=0.9, tokens_used=0)
    assert reason is not None and reason.kind == "exhausted" and "600s left unused" in reason.message


def test_budget_use_closes_the_clock_after_test_scoring():
    record = {"settings": {"time_budget_s": 300.0, "strategy": "budgeted"}, "stop_kind": "time"}
    history = [{"wall_s": 100.0, "fidelity": "explore"}, {"wall_s": 170.0, "fidelity": "final"}]
    use = budget_use(record, history, elapsed_s=291.0, finalize_s=8.5)
    assert use["explore_s"] == 100.0 and use["final_s"] == 170.0 and use["finalize_s"] == 8.5
    assert use["idle_tail_s"] == 9.0 and use["idle_tail_share"] == 0.03 and use["stop_kind"] == "time"
    assert budget_use(record, history, elapsed_s=310.0)["idle_tail_s"] == 0.0  # an overrun is no tail
