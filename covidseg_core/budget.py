"""Training sized by a time budget: how many classifier epochs and segmenter epochs x steps fit in MINUTES, and
the whole job's ETA. Plain logic on measured seconds, no torch and no Qt; the clock is injected (a callable that
returns seconds), so tests run it on a fake clock. throughput.py measures the stages' real steps; pipeline.py
asks this module for a Plan, records it in the run (RUN/plan.json) the moment it is decided, and reads it back on
resume instead of measuring again.

The split rule (README, "Training on a time budget"): the budget runs from the start of the job. Stage 1 gets
STAGE1_SHARE of the time left when it is planned (minus a reserve), covering its epochs (training + CAMs of the
tracked slices) and its pseudo masks, and never more than the fixed schedule's DEFAULT_CLS_EPOCHS epochs (more
classifier epochs barely change the pseudo masks; the segmenter gains more from the time). Stage 2 gets what
stage 1 left: the budget minus the time elapsed when it starts, minus the final report's prediction and the
reserve, so a stage 1 that ran long is absorbed by stage 2.

Precedence: an explicit epoch count of a stage (--cls-epochs, --seg-epochs) wins for that stage; the budget
then sizes only the other one. A budget too small for one epoch trains one (segmenter: MIN_SEG_STEPS steps)
and says so in a warning; it is never zero and never an error.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .errors import InputError

Clock = Callable[[], float]

DEFAULT_CLS_EPOCHS = 30          # the fixed schedule (no budget): CUDA's default, `--budget 0` anywhere
DEFAULT_SEG_EPOCHS = 40
FULL_SIZE = 256                  # working size of the fixed schedule
# A CPU trains on a budget by default, at a smaller working size and width: measured on the 2-core dev machine
# (benchmarks/budget.py --throughput), size 192 with base 16 runs ~3-4x more segmenter images per second than
# 256 with base 24, and size 128 about 1.5x more again; zenodo-dev unseen Dice with the 8-minute budget rose from
# 0.24 (192) to 0.30 (128) (docs/results.md), and 128 is the size of the label-free prior the segmenter starts from.
DEFAULT_CPU_BUDGET_MIN = 8.0     # a 300-slice study end to end in <= 10 min (loading, pseudo masks, report)
CPU_SIZE = 128
CPU_BASE = 16
AUTO = "auto"                    # TrainConfig.size: chosen from the device and the budget (None = native)

STAGE1_SHARE = 0.25
RESERVE_FRACTION = 0.03          # margin for checkpoints, run-folder writes and measurement error
RESERVE_MIN_S = 5.0
MIN_SEG_STEPS = 8                # the least a too-small budget trains the segmenter for
MIN_SEG_EPOCHS = 4               # epoch counts tried at least (shorter epochs than one pass when few fit)
STEP_TOLERANCE = 0.9             # more, shorter epochs are worth up to 10 % of the steps


def budget_seconds(budget_minutes: float | None, cuda: bool) -> float | None:
    """The budget in seconds, or None for the fixed schedule. None asks for the device's default: no budget on
    CUDA, DEFAULT_CPU_BUDGET_MIN on a CPU; 0 is the fixed schedule anywhere."""
    if budget_minutes is None:
        return None if cuda else DEFAULT_CPU_BUDGET_MIN * 60.0
    minutes = float(budget_minutes)
    if not math.isfinite(minutes) or minutes < 0:
        raise InputError(f"--budget {budget_minutes} is not a number of minutes.",
                         "Give a positive number of minutes, or 0 for the fixed schedule.")
    return minutes * 60.0 if minutes > 0 else None


def working_profile(size, base: int | None, budgeted: bool, cuda: bool, native_side: int) -> tuple:
    """(working size, segmenter width) for TrainConfig.size/base. An explicit size or base wins; AUTO is the
    full FULL_SIZE on CUDA and for the fixed schedule, else (a budgeted CPU run) CPU_SIZE, never above the
    slices' own longer side; base None is the model's default, or CPU_BASE for a budgeted CPU run."""
    cheap = budgeted and not cuda
    if size == AUTO:
        size = min(CPU_SIZE, int(native_side)) if cheap else FULL_SIZE
    if base is None and cheap:
        base = CPU_BASE
    return size, base


def reserve_seconds(budget_s: float) -> float:
    return max(RESERVE_MIN_S, RESERVE_FRACTION * budget_s)


@dataclass
class Plan:
    """What a run trains for; written to RUN/plan.json as soon as a part is decided. `stage1`/`stage2` stay None
    until planned; each holds the epochs chosen, `how` (budget | explicit | fixed) and, when measured, the
    seconds per unit and the planned seconds."""
    budget_s: float | None
    device: str
    size: int | None
    base: int | None
    stage1: dict | None = None
    stage2: dict | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def budgeted(self) -> bool:
        return self.budget_s is not None


def plan_classifier(left_s: float, epoch_s: float, pseudo_s: float, explicit: int | None = None,
                    share: float = STAGE1_SHARE) -> tuple[int, str | None]:
    """(classifier epochs, warning or None) for stage 1, given the budget left (after the reserve) when it
    starts, the measured seconds per epoch and the estimated seconds for the pseudo masks. `share` of the time
    left is stage 1's (1.0 for `covidseg pseudo`, stage 1 alone)."""
    if explicit is not None:
        return int(explicit), None
    allot = share * left_s - pseudo_s
    fit = math.floor(allot / epoch_s) if epoch_s > 0 else DEFAULT_CLS_EPOCHS
    if fit < 1:
        return 1, (f"The time budget is too small for one classifier epoch (about {epoch_s:.0f} s each, "
                   f"{max(allot, 0):.0f} s available): training one.")
    return min(fit, DEFAULT_CLS_EPOCHS), None


def plan_segmenter(left_s: float, step_s: float, val_s: float, one_pass: int, explicit_epochs: int | None = None,
                   explicit_steps: int | None = None) -> tuple[int, int, str | None]:
    """(segmenter epochs, steps per epoch, warning or None) for stage 2, given the budget left when it starts
    (after the report and the reserve), the measured seconds per step, the seconds one validation pass takes
    (every epoch ends with one) and the batches of one pass over the training slices.

    An epoch is at most one pass. Of the epoch counts that fit, the one that trains the most steps wins; among
    those within STEP_TOLERANCE of it, the most epochs (more validation, best-checkpoint and resume points).
    Never fewer than MIN_SEG_STEPS steps: a budget too small for them trains them anyway, with a warning."""
    one_pass = max(1, int(one_pass))
    spe_max = min(int(explicit_steps), one_pass) if explicit_steps else one_pass
    if explicit_epochs is not None:
        return int(explicit_epochs), spe_max, None
    if step_s <= 0:
        return DEFAULT_SEG_EPOCHS, spe_max, None
    plans = []     # (steps in all, epochs, steps per epoch)
    for e in range(1, max(MIN_SEG_EPOCHS, math.floor(left_s / (spe_max * step_s + val_s))) + 1):
        spe = min(spe_max, math.floor((left_s / e - val_s) / step_s))
        if spe >= 1 and (spe == spe_max or not explicit_steps):
            plans.append((e * spe, e, spe))
    most = max((p[0] for p in plans), default=0)
    if most >= MIN_SEG_STEPS:
        epochs, spe = max((e, spe) for total, e, spe in plans if total >= STEP_TOLERANCE * most)
        return epochs, spe, None
    spe = min(spe_max, MIN_SEG_STEPS)
    epochs = math.ceil(MIN_SEG_STEPS / spe)
    return epochs, spe, (f"The time budget is too small to train the segmenter (about {step_s:.1f} s per step, "
                         f"{max(left_s, 0):.0f} s left): training the minimum, {epochs * spe} steps.")


def seconds_per_item(items: Iterable, n: int, warmup: int, clock: Clock) -> float:
    """Mean seconds per item of `items` (a generator that yields once per step done), timed over the `n` items
    after the first `warmup` (>= 1: a network's first steps are slow, memory and kernel selection, and the
    first item's start is not observable); fewer if it ends first. `items` is closed afterwards."""
    if warmup < 1 or n < 1:
        raise ValueError("seconds_per_item needs warmup >= 1 and n >= 1")
    it = iter(items)
    start = end = None
    count = 0
    try:
        for k, _ in enumerate(it, 1):
            if k == warmup:
                start = clock()
            elif start is not None:
                count += 1
                end = clock()
                if count == n:
                    break
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
    if start is None or end is None:
        raise ValueError("too few steps to measure")
    return (end - start) / count


PHASES = ("classifier", "pseudo", "segmenter", "predict")   # the Progress stages of a train job, in order


class EtaTracker:
    """The whole job's ETA from Progress events: the current phase's rest at the rate observed so far (or its
    planned seconds before any progress), plus the planned seconds of the phases after it. A phase whose cost
    is not known yet (stage 2 of a fixed schedule, before it starts) makes the ETA unknown (None), except on a
    budget, where stage 2 fills the time up to the budget's end."""

    def __init__(self, clock: Clock, started: float, budget_s: float | None = None, phases=PHASES):
        self.clock = clock
        self.started = started
        self.budget_s = budget_s
        self.phases = tuple(phases)
        self.planned: dict[str, float | None] = {p: None for p in self.phases}
        self._phase: str | None = None
        self._phase_start = (0.0, 0)

    def plan(self, phase: str, seconds: float | None) -> None:
        self.planned[phase] = seconds

    def eta(self, stage: str, done: int, total: int) -> float | None:
        if stage not in self.planned:
            return None
        now = self.clock()
        if stage != self._phase:
            self._phase, self._phase_start = stage, (now, done)
        t0, d0 = self._phase_start
        if done > d0 and now > t0:
            rest = (now - t0) / (done - d0) * max(total - done, 0)
        elif self.planned[stage] is not None:
            rest = self.planned[stage] * (1 - done / total if total else 1)
        else:
            return None
        later = self.phases[self.phases.index(stage) + 1:]
        if self.budget_s is not None and "segmenter" in later and self.planned.get("segmenter") is None:
            # stage 2 takes what stage 1 leaves: the job ends with the budget, unless stage 1 overruns it
            end = self.started + self.budget_s - now
            return max(end, rest + sum(self.planned[p] or 0.0 for p in later))
        if any(self.planned[p] is None for p in later):
            return None
        return rest + sum(self.planned[p] for p in later)
