"""The `covidseg pseudo` job: stage 1 alone (weak/job.run_stage1), on the fixed schedule or sized by a budget
(stage 1 gets all of it), as one process or under torchrun.

Under torchrun (docs/distributed.md) every rank trains its share of each classifier batch; rank 0 alone times the
speed probe and decides the epochs, and every rank trains to its plan (broadcast), as `train` does
(pipeline._Budget); rank 0 alone writes the run (runs.RunFolder skips the others' writes).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from . import distributed
from .budget import EtaTracker, Plan, reserve_seconds
from .events import CancelToken, Done, Progress, relay
from .infer.device import resolve_device
from .pipeline import check_config, check_data, decide_stage1, new_plan, stage1_config
from .runs import METRICS_NAME, PLAN_NAME, RunFolder
from .train_config import TrainConfig
from .weak.job import run_stage1


def pseudo_job(slices, out: str | Path, cfg: TrainConfig, device: str = "auto", cancel: CancelToken | None = None,
               clock=time.monotonic, cue: str | None = None):
    """Generator job for `covidseg pseudo`. Without --budget it is the fixed schedule (30 epochs at size 256, or
    what cfg gives); with one, stage 1 gets the whole budget, planned and recorded in RUN/plan.json like a train
    run's (and reused when the same command runs again). `cue`: prior | cam (None: as a train run with cfg would
    take it)."""
    started = clock()
    cancel = cancel or CancelToken()
    dev = resolve_device(device)
    check_config(cfg, dev)
    cfg = dataclasses.replace(cfg, budget_minutes=cfg.budget_minutes or 0, seg_epochs=None)
    check_data(slices, cfg, dev)
    run = RunFolder(out)
    recorded = run.read_json(PLAN_NAME) if run.exists() else None
    plan = Plan.from_dict(recorded) if recorded else new_plan(cfg, dev, max(slices.images.shape[1:]))
    if plan.stage1 is None and distributed.is_writer():
        def left() -> float:
            return plan.budget_s - (clock() - started) - reserve_seconds(plan.budget_s)
        yield from decide_stage1(plan, slices, cfg, dev, cancel, clock, left, share=1.0)
    if distributed.active():       # every rank trains to rank 0's plan (its clock, its probe)
        plan = Plan.from_dict(distributed.broadcast(plan.to_dict()))
    eta = EtaTracker(clock, started, phases=("classifier", "pseudo"))
    for phase in ("classifier", "pseudo"):
        eta.plan(phase, plan.stage1.get(f"{phase}_s"))

    written = [False]

    def record_and_eta(event) -> None:
        # run_stage1 makes the run folder before its first event: the plan is written into it then
        if not written[0] and run.exists():
            run.write_json(PLAN_NAME, plan.to_dict())
            written[0] = True
        if isinstance(event, Progress):
            event.eta_s = eta.eta(event.stage, event.done, event.total)
    s1 = stage1_config(dataclasses.replace(cfg, size=plan.size, cls_epochs=plan.stage1["epochs"]), dev, cue)
    metrics = yield from relay(run_stage1(slices, run.path, s1, cancel, log_epochs=True), record_and_eta)
    metrics = {**(metrics or {}), "plan": {**plan.to_dict(), "actual_s": {"total": round(clock() - started, 1)}}}
    run.write_json(METRICS_NAME, metrics)
    yield Done(metrics)
