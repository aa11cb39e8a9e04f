"""How fast the two stages train here and now, measured on their own first steps, for the budget planner
(budget.py). Each probe drives the stage's real job (weak/job.run_stage1, seg/training.train_segmenter) into a
scratch run folder for a few steps and then closes it, so whatever the stages train on and however they augment,
the probe times the same code; the scratch folder is deleted and the run's own folder is never touched. The
probes are generators (Progress "plan") so the job stays cancellable while it measures.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from .budget import Clock, seconds_per_item
from .events import CancelToken, EpochReport, Progress
from .runs import RunFolder
from .models.segmenter import build_from_spec
from .seg.training import SegmenterData, evaluate_loss, train_segmenter
from .weak.config import Stage1Config
from .weak.job import run_stage1

PSEUDO_SAMPLE = 16           # slices timed of the pseudo-mask writing (stage 1 reports progress every 16)
SEG_WARMUP_STEPS, SEG_TIMED_STEPS = 1, 2


def stage1_costs(slices, config: Stage1Config, cancel: CancelToken, clock: Clock):
    """Generator: seconds per classifier epoch (its batches, BatchNorm re-estimation and the CAMs of the
    tracked slices) and the estimated seconds for the pseudo masks, from one real epoch on a scratch folder.
    Returns {"epoch_s": ..., "pseudo_s": ...}."""
    yield Progress("plan", 0, 2, "measuring the classifier's speed")
    with tempfile.TemporaryDirectory(prefix="covidseg-probe-") as tmp:
        job = run_stage1(slices, Path(tmp) / "run", dataclasses.replace(config, cls_epochs=1),
                         cancel, log_epochs=False)
        start = clock()
        batches: list[float] = []
        epoch_end = pseudo_start = None
        pseudo = (0, 0.0)
        n_batches = 1
        try:
            for ev in job:
                if isinstance(ev, Progress) and ev.stage == "classifier" and len(batches) < 2:
                    batches.append(clock())
                    n_batches = max(1, ev.total)
                elif isinstance(ev, EpochReport):
                    epoch_end = clock()
                elif isinstance(ev, Progress) and ev.stage == "pseudo":
                    if pseudo_start is None:
                        pseudo_start = (ev.done, clock())
                        n_todo = ev.total
                    elif ev.done > pseudo_start[0]:
                        pseudo = (ev.done - pseudo_start[0], clock() - pseudo_start[1])
                        break
        finally:
            job.close()
    if epoch_end is None:
        raise RuntimeError("the classifier probe ended before its first epoch")
    if len(batches) >= 2 and n_batches > 1:     # the first batch is slow (warm-up): count the second one twice
        epoch_s = (epoch_end - batches[0]) + (batches[1] - batches[0])
    else:
        epoch_s = epoch_end - start
    per_slice = pseudo[1] / pseudo[0] if pseudo[0] else 0.0
    yield Progress("plan", 1, 2, "measuring the classifier's speed")
    return {"epoch_s": epoch_s, "pseudo_s": per_slice * (n_todo if pseudo_start else 0)}


def stage2_costs(data: SegmenterData, cfg, device, cancel: CancelToken, clock: Clock, batch_size: int):
    """Generator: seconds per segmenter training step, timed on SEG_TIMED_STEPS real steps after a warm-up one
    (a scratch folder, steps capped so no epoch ends), and seconds per slice of a validation pass (the final
    report's prediction is taken to cost the same). Returns {"step_s": ..., "eval_slice_s": ...}."""
    yield Progress("plan", 1, 2, "measuring the segmenter's speed")
    n = SEG_WARMUP_STEPS + SEG_TIMED_STEPS
    probe_cfg = dataclasses.replace(cfg, seg_epochs=1, steps_per_epoch=n)
    with tempfile.TemporaryDirectory(prefix="covidseg-probe-") as tmp:
        run = RunFolder(Path(tmp) / "run")
        run.create({"probe": True}, {}, str(device))
        steps = (ev for ev in train_segmenter(data, probe_cfg, run, device, cancel)
                 if isinstance(ev, (Progress, EpochReport)))
        step_s = seconds_per_item(steps, SEG_TIMED_STEPS, SEG_WARMUP_STEPS, clock)
    yield Progress("plan", 2, 2, "measuring the segmenter's speed")
    return {"step_s": step_s, "eval_slice_s": _eval_slice_seconds(data, cfg, device, cancel, clock, batch_size)}


def _eval_slice_seconds(data: SegmenterData, cfg, device, cancel: CancelToken, clock: Clock,
                        batch_size: int) -> float:
    """Seconds per slice of the validation pass (seg/training.evaluate_loss, batches of 2 x batch size as the
    loop runs it; the final report's prediction costs about the same), timed after a warm-up batch."""
    model = build_from_spec(cfg.model_spec()).to(device)
    idx = data.val_idx if len(data.val_idx) else data.train_idx
    bs = 2 * batch_size
    x, y = data.images[idx[:bs]], data.targets[idx[:bs]]
    evaluate_loss(model, x, y, device, bs, cancel)         # warm-up
    start = clock()
    evaluate_loss(model, x, y, device, bs, cancel)
    return (clock() - start) / max(1, len(x))
