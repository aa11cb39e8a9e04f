"""The time-budget planner (covidseg_core/budget.py) on a FAKE clock: the split between the stages, explicit
epochs winning, a too-small budget, device defaults, the ETA. No test here reads or asserts wall-clock time."""
from __future__ import annotations

import pytest

from covidseg_core import budget as B
from covidseg_core.errors import InputError


class FakeClock:
    """Seconds that only move when told to."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def steps(clock: FakeClock, durations):
    """A stand-in for a training loop: yields once per step, each step taking its duration on the fake clock."""
    for d in durations:
        clock.advance(d)
        yield d


# --- measuring -----------------------------------------------------------------------------------------------

def test_seconds_per_item_skips_the_warm_up_and_closes_the_loop():
    clock = FakeClock()
    closed = []

    def loop():
        try:
            yield from steps(clock, [9.0, 2.0, 4.0, 100.0, 100.0])
        finally:
            closed.append(True)
    assert B.seconds_per_item(loop(), n=2, warmup=1, clock=clock) == pytest.approx(3.0)
    assert closed == [True]          # the probe stops the real loop: no further steps are trained
    assert B.seconds_per_item(steps(clock, [9.0, 1.0]), n=5, warmup=1, clock=clock) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        B.seconds_per_item(steps(clock, [9.0]), n=2, warmup=1, clock=clock)


# --- the split ---------------------------------------------------------------------------------------------

def test_stage1_gets_its_share_and_never_more_than_the_fixed_schedule():
    epochs, warning = B.plan_classifier(left_s=400.0, epoch_s=5.0, pseudo_s=20.0)
    assert epochs == int((B.STAGE1_SHARE * 400 - 20) // 5) and warning is None
    # a fast device: capped at the fixed schedule's epochs, the rest is stage 2's
    assert B.plan_classifier(left_s=10_000.0, epoch_s=1.0, pseudo_s=0.0) == (B.DEFAULT_CLS_EPOCHS, None)
    # twice the budget, about twice the epochs (floor)
    assert B.plan_classifier(600.0, 5.0, 20.0)[0] > epochs


def test_stage2_fills_what_is_left_with_one_pass_epochs():
    epochs, spe, warning = B.plan_segmenter(left_s=300.0, step_s=1.0, val_s=5.0, one_pass=20)
    assert spe == 20 and epochs == 300 // 25 and warning is None
    assert epochs * (spe * 1.0 + 5.0) <= 300.0
    # little time: shorter epochs so the run still has MIN_SEG_EPOCHS validation / resume points
    epochs, spe, _ = B.plan_segmenter(left_s=60.0, step_s=1.0, val_s=2.0, one_pass=30)
    assert epochs == B.MIN_SEG_EPOCHS and spe < 30 and epochs * (spe + 2.0) <= 60.0
    # a large held-out set (validation ends every epoch): no feasible plan trains 10 % more steps than the chosen
    for left, step, val, one_pass in ((250.0, 4.0, 28.0, 17), (60.0, 1.0, 2.0, 30), (1000.0, 0.5, 40.0, 50)):
        epochs, spe, _ = B.plan_segmenter(left, step, val, one_pass)
        assert spe <= one_pass and epochs * (spe * step + val) <= left
        feasible = [e * s for e in range(1, 200) for s in range(1, one_pass + 1) if e * (s * step + val) <= left]
        assert max(feasible) <= epochs * spe / B.STEP_TOLERANCE
    # an explicit cap on steps per epoch is kept
    epochs, spe, _ = B.plan_segmenter(left_s=300.0, step_s=1.0, val_s=0.0, one_pass=30, explicit_steps=10)
    assert spe == 10 and epochs == 30


def test_an_overrun_of_stage1_is_absorbed_by_stage2():
    clock = FakeClock()
    start, budget_s = clock(), 600.0
    reserve = B.reserve_seconds(budget_s)
    plans = []
    for stage1_took in (100.0, 250.0):          # on time, and far slower than planned
        clock.t = start + stage1_took
        left = budget_s - (clock() - start) - reserve
        epochs, spe, _ = B.plan_segmenter(left, step_s=2.0, val_s=4.0, one_pass=10)
        plans.append(epochs * (spe * 2.0 + 4.0))
        assert stage1_took + plans[-1] + reserve <= budget_s
    assert plans[1] < plans[0]


def test_explicit_epochs_win_for_their_stage():
    assert B.plan_classifier(left_s=1.0, epoch_s=100.0, pseudo_s=0.0, explicit=7) == (7, None)
    assert B.plan_segmenter(left_s=1.0, step_s=100.0, val_s=0.0, one_pass=5, explicit_epochs=3) == (3, 5, None)


def test_a_budget_too_small_trains_one_epoch_and_says_so():
    epochs, warning = B.plan_classifier(left_s=10.0, epoch_s=60.0, pseudo_s=5.0)
    assert epochs == 1 and "too small" in warning
    epochs, warning = B.plan_classifier(left_s=-50.0, epoch_s=60.0, pseudo_s=5.0)   # already over budget
    assert epochs == 1 and warning
    epochs, spe, warning = B.plan_segmenter(left_s=3.0, step_s=2.0, val_s=1.0, one_pass=30)
    assert epochs * spe == B.MIN_SEG_STEPS and "too small" in warning
    epochs, spe, warning = B.plan_segmenter(left_s=-10.0, step_s=2.0, val_s=1.0, one_pass=3)
    assert spe == 3 and epochs * spe >= B.MIN_SEG_STEPS and warning


# --- device defaults ---------------------------------------------------------------------------------------

def test_budget_defaults_depend_on_the_device():
    assert B.budget_seconds(None, cuda=True) is None                          # CUDA: the full schedule
    assert B.budget_seconds(None, cuda=False) == B.DEFAULT_CPU_BUDGET_MIN * 60
    assert B.budget_seconds(0, cuda=False) is None                            # --budget 0 / --no-budget
    assert B.budget_seconds(2.5, cuda=True) == 150.0
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(InputError, match="minutes"):
            B.budget_seconds(bad, cuda=False)


def test_working_size_and_width_depend_on_the_device_and_the_budget():
    assert B.working_profile(B.AUTO, None, budgeted=False, cuda=True, native_side=512) == (256, None)
    assert B.working_profile(B.AUTO, None, budgeted=True, cuda=True, native_side=512) == (256, None)
    assert B.working_profile(B.AUTO, None, budgeted=False, cuda=False, native_side=512) == (256, None)
    assert B.working_profile(B.AUTO, None, budgeted=True, cuda=False, native_side=512) == (B.CPU_SIZE, B.CPU_BASE)
    assert B.working_profile(B.AUTO, None, budgeted=True, cuda=False, native_side=128) == (128, B.CPU_BASE)
    assert B.working_profile(160, 24, budgeted=True, cuda=False, native_side=512) == (160, 24)   # explicit wins
    assert B.working_profile(None, None, budgeted=True, cuda=False, native_side=512) == (None, B.CPU_BASE)


def test_the_plan_round_trips_through_json():
    import json

    plan = B.Plan(budget_s=60.0, device="cpu", size=192, base=16, stage1={"how": "budget", "epochs": 3},
                  warnings=["w"])
    assert B.Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


# --- ETA ---------------------------------------------------------------------------------------------------

def test_eta_covers_the_whole_job():
    clock = FakeClock()
    eta = B.EtaTracker(clock, started=clock(), budget_s=None)
    for phase, s in (("classifier", 100.0), ("pseudo", 10.0), ("segmenter", 300.0), ("predict", 20.0)):
        eta.plan(phase, s)
    assert eta.eta("classifier", 0, 10) == pytest.approx(430.0)          # all planned, nothing done yet
    clock.advance(30.0)
    assert eta.eta("classifier", 5, 10) == pytest.approx(30.0 + 330.0)   # observed rate: 6 s per unit
    assert eta.eta("segmenter", 0, 100) == pytest.approx(320.0)
    clock.advance(10.0)
    assert eta.eta("segmenter", 50, 100) == pytest.approx(10.0 + 20.0)
    assert eta.eta("plan", 0, 2) is None                                   # not a phase of the ETA


def test_eta_on_a_budget_ends_with_the_budget_before_stage2_is_planned():
    clock = FakeClock()
    eta = B.EtaTracker(clock, started=clock(), budget_s=600.0)
    eta.plan("classifier", 100.0)
    eta.plan("pseudo", 10.0)
    clock.advance(50.0)
    assert eta.eta("classifier", 0, 10) == pytest.approx(550.0)
    # without a budget, stage 2's cost is unknown until it is planned: no ETA rather than a wrong one
    fixed = B.EtaTracker(clock, started=clock(), budget_s=None)
    fixed.plan("classifier", 100.0)
    assert fixed.eta("classifier", 0, 10) is None
