"""The whole `train` job: labels -> stage 1 (weak/: classifier, fused CAMs, pseudo masks) -> stage 2 (seg/:
targets, the segmenter) -> a report against ground truth. weak/ and seg/ never import each other; this module
joins them, through the run folder (the pseudo masks stage 1 writes are what stage 2 reads).

One run folder holds it all (runs.py) and the job is resumable: re-running the same command on the same RUN
skips a finished stage 1 and continues the segmenter from its last checkpoint (seg/training.py).

Sizing (budget.py): the device and the time budget decide what TrainConfig left open (working size, width,
epochs of each stage); each stage is planned when it starts, from its measured speed (throughput.py), and the
plan is written to RUN/plan.json at once, so a resumed run trains to the same plan. Ground-truth masks (`masks/`)
are for reporting only and never reach the loss, the validation loss or the checkpoint choice (seg/targets.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .budget import (DEFAULT_CLS_EPOCHS, DEFAULT_SEG_EPOCHS, STAGE1_SHARE, EtaTracker, Plan, budget_seconds,
                     plan_classifier, plan_segmenter, reserve_seconds, working_profile)
from .constants import FUSION_MODES, IGNORE, LUNG_METHODS, SYNTHETIC_MODES
from .data import data_fingerprint, load_slice_set
from .errors import InputError
from .events import CancelToken, Done, Message, Progress, relay
from .infer.device import resolve_device
from .infer.onnx_export import run_onnx_export
from .results.training_report import ground_truth_report
from .runs import METRICS_NAME, PLAN_NAME, STAGE1_DONE_NAME, RunFolder
from .seg.prior import matching_prior
from .seg.targets import build_targets, split_validation
from .seg.training import prepare_segmenter_data, train_segmenter
from .synth.study import study_supply
from .throughput import stage1_costs, stage2_costs
from .train_config import TrainConfig
from .weak.config import Stage1Config, check_inputs
from .weak.job import run_stage1

log = logging.getLogger(__name__)


# --- the plan: what the device and the budget chose --------------------------------------------------------

def new_plan(cfg: TrainConfig, dev: torch.device, native_side: int) -> Plan:
    """A run's plan before any stage is sized: the budget, working size and width for this device. With both
    stages' epochs given the budget sizes nothing, and the run is not a budgeted one (no cheaper CPU profile)."""
    budget_s = budget_seconds(cfg.budget_minutes, dev.type == "cuda")
    if cfg.cls_epochs is not None and cfg.seg_epochs is not None:
        budget_s = None
    size, base = working_profile(cfg.size, cfg.base, budget_s is not None, dev.type == "cuda", native_side)
    return Plan(budget_s=budget_s, device=dev.type, size=size, base=base)


def _warn(plan: Plan, warning: str | None):
    if warning:
        plan.warnings.append(warning)
        yield Message(warning, "warning")


def decide_stage1(plan: Plan, slices, cfg: TrainConfig, dev: torch.device, cancel: CancelToken, clock, left,
                  share: float = STAGE1_SHARE):
    """Generator: sets plan.stage1, the classifier's epochs: explicit, the fixed schedule, or (on a budget)
    timed on one real epoch by this rank alone (N ranks each train 1/N of it), fitted into `share` of `left()`."""
    if cfg.cls_epochs is not None or not plan.budgeted:
        plan.stage1 = {"how": "explicit" if cfg.cls_epochs is not None else "fixed",
                       "epochs": cfg.cls_epochs or DEFAULT_CLS_EPOCHS}
        return
    probe_cfg = stage1_config(dataclasses.replace(cfg, size=plan.size, cls_epochs=1), dev)
    with distributed.local_only():
        costs = yield from relay(stage1_costs(slices, probe_cfg, cancel, clock))
    epoch_s = costs["epoch_s"] / distributed.size()
    epochs, warning = plan_classifier(left(), epoch_s, costs["pseudo_s"], share=share)
    plan.stage1 = {"how": "budget", "epochs": epochs, "epoch_s": round(epoch_s, 3),
                   "classifier_s": round(epochs * epoch_s, 1), "pseudo_s": round(costs["pseudo_s"], 1)}
    yield from _warn(plan, warning)


class _Budget:
    """The plan of one run, its clock, and the whole job's ETA. `spent_before` is budget time used by earlier
    attempts of a resumed run (stage 1 finished then), so stage 2 is planned on the same clock."""

    def __init__(self, run: RunFolder, cfg: TrainConfig, dev: torch.device, native_side: int, clock, started: float):
        self.run, self.clock, self.started = run, clock, started
        recorded = run.read_json(PLAN_NAME)
        self.plan = Plan.from_dict(recorded) if recorded else new_plan(cfg, dev, native_side)
        if not recorded:
            self.save()
        self.spent_before = 0.0
        stage2_sized = self.plan.budgeted and cfg.seg_epochs is None
        self.eta = EtaTracker(clock, started, self.plan.budget_s if stage2_sized else None)
        self.share()
        for key, phases in (("stage1", ("classifier", "pseudo")), ("stage2", ("segmenter", "predict"))):
            for phase in phases:
                self.eta.plan(phase, (getattr(self.plan, key) or {}).get(f"{phase}_s"))

    def save(self) -> None:
        self.run.write_json(PLAN_NAME, self.plan.to_dict())

    def share(self) -> None:
        """Under torchrun rank 0's plan (its clock, its speed probe) is every rank's: all train the same steps."""
        if distributed.active():
            self.plan = Plan.from_dict(distributed.broadcast(self.plan.to_dict()))

    def elapsed(self) -> float:
        return self.spent_before + self.clock() - self.started

    def left(self, *minus: float) -> float:
        return self.plan.budget_s - self.elapsed() - reserve_seconds(self.plan.budget_s) - sum(minus)

    def with_eta(self, event) -> None:
        """relay's on_event: every Progress of the job carries the whole job's ETA."""
        if isinstance(event, Progress):
            event.eta_s = self.eta.eta(event.stage, event.done, event.total)

    def resolved(self, cfg: TrainConfig) -> TrainConfig:
        """cfg with what the plan chose filled in: what the stages train with."""
        s1, s2 = self.plan.stage1 or {}, self.plan.stage2 or {}
        return dataclasses.replace(cfg, size=self.plan.size, base=self.plan.base,
                                   cls_epochs=s1.get("epochs", cfg.cls_epochs),
                                   seg_epochs=s2.get("epochs", cfg.seg_epochs),
                                   steps_per_epoch=s2.get("steps_per_epoch", cfg.steps_per_epoch))

    def plan_stage1(self, slices, cfg: TrainConfig, dev: torch.device, cancel: CancelToken):
        """Generator: decides (unless recorded) and records the classifier's epochs."""
        if self.plan.stage1 is None and distributed.is_writer():
            yield from decide_stage1(self.plan, slices, cfg, dev, cancel, self.clock, self.left)
            for phase in ("classifier", "pseudo"):
                self.eta.plan(phase, self.plan.stage1.get(f"{phase}_s"))
            self.save()
        self.share()

    def plan_stage2(self, seg_data, cfg: TrainConfig, dev: torch.device, cancel: CancelToken, n_report: int):
        """Generator: decides (unless recorded; rank 0 under torchrun) and records the segmenter's epochs and
        steps per epoch."""
        if self.plan.stage2 is None and distributed.is_writer():
            with distributed.local_only():
                yield from self._decide_stage2(seg_data, cfg, dev, cancel, n_report)
        self.share()

    def _decide_stage2(self, seg_data, cfg: TrainConfig, dev: torch.device, cancel: CancelToken, n_report: int):
        bs = max(1, min(cfg.batch_size, seg_data.epoch_size))
        one_pass = max(1, math.ceil(seg_data.epoch_size / bs))
        spe = min(cfg.steps_per_epoch or one_pass, one_pass)
        if cfg.seg_epochs is not None or not self.plan.budgeted:
            how = "explicit" if cfg.seg_epochs is not None else "fixed"
            self.plan.stage2 = {"how": how, "epochs": cfg.seg_epochs or DEFAULT_SEG_EPOCHS, "steps_per_epoch": spe}
        else:
            costs = yield from relay(stage2_costs(seg_data, self.resolved(cfg), dev, cancel, self.clock, bs))
            val_s = costs["eval_slice_s"] * (len(seg_data.val_idx) + seg_data.n_val_synthetic)
            report_s = costs["eval_slice_s"] * n_report
            epochs, spe, warning = plan_segmenter(self.left(report_s), costs["step_s"], val_s, one_pass,
                                                  explicit_steps=cfg.steps_per_epoch)
            self.plan.stage2 = {"how": "budget", "epochs": epochs, "steps_per_epoch": spe,
                                "step_s": round(costs["step_s"], 4),
                                "segmenter_s": round(epochs * (spe * costs["step_s"] + val_s), 1),
                                "predict_s": round(report_s, 1), "started_at_s": round(self.elapsed(), 1)}
            yield from _warn(self.plan, warning)
            for phase in ("segmenter", "predict"):
                self.eta.plan(phase, self.plan.stage2[f"{phase}_s"])
        self.save()

    def summary(self, stage1_s: float | None, stage2_s: float) -> dict:
        """What metrics.json says the budget chose, with the seconds each stage took in this attempt."""
        return {**self.plan.to_dict(), "actual_s": {"stage1": None if stage1_s is None else round(stage1_s, 1),
                                                    "stage2": round(stage2_s, 1),
                                                    "total": round(self.elapsed(), 1)}}


# --- the whole job -----------------------------------------------------------------------------------------

def stage1_config(cfg: TrainConfig, device: torch.device, cue: str | None = None) -> Stage1Config:
    """The stage-1 options of a `train` run; the paper's method (`--synthetic off`) uses no label-free prior."""
    paper = cfg.synthetic == "off"
    return Stage1Config(fusion=cfg.fusion, size=cfg.size, cls_epochs=cfg.cls_epochs, seed=cfg.seed,
                        device=str(device.type), lung_method=cfg.lung_method, cue=cue or ("cam" if paper else "prior"),
                        slice_score="classifier" if paper else "classifier+prior")


def run_stage1_once(slices, run: RunFolder, cfg: TrainConfig, device: torch.device, cancel: CancelToken, on_event=None):
    """Generator: stage 1 into RUN/ unless a finished stage 1 is there already; returns its metrics."""
    done = run.read_json(STAGE1_DONE_NAME)
    if done is not None and done.get("finished"):
        yield Message("stage 1 already finished in this run: reusing its pseudo masks")
        return done.get("metrics") or {}
    metrics = yield from relay(run_stage1(slices, run.path, stage1_config(cfg, device), cancel, log_epochs=True),
                               on_event)
    metrics = metrics or {}
    run.write_json(STAGE1_DONE_NAME, {"finished": True, "metrics": metrics})
    return metrics


def _segmenter_start(cfg: TrainConfig):
    """Generator: the weights the segmenter starts from (None: random), with a note saying which and why."""
    if cfg.init == "none":
        return None
    state, note = matching_prior(cfg.model_spec(), cfg.size, None if cfg.init == "prior" else Path(cfg.init))
    yield Message(note)
    return state


def check_config(cfg: TrainConfig, dev: torch.device) -> None:
    """Options that cannot work, before anything is read or written."""
    if any(e is not None and e < 1 for e in (cfg.cls_epochs, cfg.seg_epochs)):
        raise InputError("--cls-epochs and --seg-epochs must be at least 1.")
    if cfg.fusion not in FUSION_MODES:
        raise InputError(f"Unknown fusion '{cfg.fusion}'.", "Use avg, max or none.")
    if cfg.synthetic not in SYNTHETIC_MODES:
        raise InputError(f"Unknown synthetic mode '{cfg.synthetic}'.", f"Use {', '.join(SYNTHETIC_MODES)}.")
    if cfg.init not in ("prior", "none") and not Path(cfg.init).is_file():
        raise InputError(f"--init {cfg.init}: no such file.", "Use prior, none, or the path of a prior file.")
    if not 0 <= cfg.prior_share <= 1:
        raise InputError(f"--prior-share {cfg.prior_share}: out of range.", "Use a number from 0 to 1.")
    if cfg.lung_method not in LUNG_METHODS:
        raise InputError(f"Unknown lung-field method '{cfg.lung_method}'.", f"Use {' or '.join(LUNG_METHODS)}.")
    if cfg.pixel_labels and not Path(cfg.pixel_labels).is_dir():
        raise InputError(f"--pixel-labels folder {cfg.pixel_labels} does not exist.", "Check the path.")
    budget_seconds(cfg.budget_minutes, dev.type == "cuda")     # a negative or non-finite budget is an InputError


def check_data(slices, cfg: TrainConfig, dev: torch.device, data=None) -> None:
    """What stage 1 would refuse in these slices and labels (too few of a label, identical images...), checked
    before the run folder is made: a refused run leaves no folder behind, and the corrected command then starts
    afresh instead of being refused as trained on "other data"."""
    if len(slices) == 0:
        raise InputError(f"{data or 'The data set'} holds no slices.")
    size = new_plan(cfg, dev, max(slices.images.shape[1:])).size
    check_inputs(slices, stage1_config(dataclasses.replace(cfg, size=size, cls_epochs=cfg.cls_epochs or 1), dev))


def train_job(data: str | Path, out: str | Path, cfg: TrainConfig | None = None, device: str = "auto",
              cancel: CancelToken | None = None, labels_csv: str | Path | None = None, slices=None,
              clock=time.monotonic):
    """Generator job for `covidseg train`: yields Progress / Message / EpochReport, ends with Done(metrics).

    `slices`: a loaded SliceSet (the app's), a loader called as slices(data, labels_csv) (the CLI's slice cache)
    or None (`data` is read with load_slice_set). `clock` (seconds) times the budget and the ETA; tests fake it.
    """
    cfg = cfg or TrainConfig()
    cancel = cancel or CancelToken()
    started = clock()
    dev = resolve_device(device)
    check_config(cfg, dev)
    if slices is None or callable(slices):
        yield Message(f"reading {data}")
        slices = (slices or load_slice_set)(data, labels_csv)
    check_data(slices, cfg, dev, data)
    if cfg.pixel_labels:             # their names and sizes, before the run folder is made (read again in stage 2)
        build_targets(slices, None, Path(cfg.pixel_labels))
    run = RunFolder(out)
    options = cfg.options()
    data_info = {"path": str(Path(data).resolve()) if data else None, "n_slices": len(slices),
                 "shape": list(slices.images.shape[1:]), "labels": slices.counts(),
                 "fingerprint": data_fingerprint(slices)}
    with distributed.writer_first():      # the other ranks find the run rank 0 made (or checked)
        if run.exists():
            config = run.read_config()
            run.check_resumable(config, options, data_info)
            yield Message(f"resuming run {run.path}")
        else:
            run.create(options, data_info, str(dev))
    yield Message(f"training on {dev} ({len(slices)} slices: {slices.counts()})")
    final = run.read_json(METRICS_NAME)
    if final and final.get("complete") and run.has_model():
        yield Message(f"run {run.path} is already complete")
        yield Done(final)
        return

    budget = _Budget(run, cfg, dev, max(slices.images.shape[1:]), clock, started)
    if cfg.cls_epochs is not None and cfg.seg_epochs is not None and cfg.budget_minutes:
        yield Message("--cls-epochs and --seg-epochs are both given: the time budget sizes nothing")
    stage1_done = bool((run.read_json(STAGE1_DONE_NAME) or {}).get("finished"))
    if stage1_done:
        budget.spent_before = float((budget.plan.stage1 or {}).get("ended_at_s", 0.0))
    stage1_start = budget.elapsed()
    yield from budget.plan_stage1(slices, cfg, dev, cancel)
    stage1_metrics = yield from run_stage1_once(slices, run, budget.resolved(cfg), dev, cancel, budget.with_eta)
    stage1_s = None if stage1_done else budget.elapsed() - stage1_start
    if not stage1_done:
        budget.plan.stage1["ended_at_s"] = round(budget.elapsed(), 1)
        budget.save()

    stage2_start = budget.elapsed()
    distributed.barrier()            # the pseudo masks rank 0 writes are what every rank reads next
    pixel_dir = Path(cfg.pixel_labels) if cfg.pixel_labels else None
    targets, has_target, source = build_targets(slices, run.pseudo_dir, pixel_dir)
    n_pixel = source.count("pixel")
    if n_pixel:
        yield Message(f"{n_pixel} slice(s) with your pixel masks are used as full supervision")
    if cfg.synthetic == "only":      # label-free: the infected slices' pseudo masks stay out of training
        has_target &= ~np.array([src == "pseudo" and lab == "infected" for src, lab in zip(source, slices.labels)])
    has_fg = np.array([(t == 1).any() for t in targets])
    train_idx, val_idx = split_validation(slices.groups, np.flatnonzero(has_target), cfg.val_fraction, cfg.seed,
                                          has_fg, always_train=np.array([src == "pixel" for src in source]))
    supply = study_supply(slices, run, cfg.synthetic, cfg.lung_method, cfg.seed, budget.plan.size, len(val_idx))
    for note in supply.notes:
        yield Message(note)
    seg_data = prepare_segmenter_data(slices.images, targets, train_idx, val_idx, budget.plan.size,
                                      supply.source, supply.share, supply.n_validation)
    n_report = int(slices.has_gt.sum()) if slices.has_gt is not None else 0
    yield from budget.plan_stage2(seg_data, cfg, dev, cancel, n_report)
    resolved = budget.resolved(cfg)
    init_state = yield from _segmenter_start(resolved)
    seg_summary = yield from relay(train_segmenter(seg_data, resolved, run, dev, cancel, init_state), budget.with_eta)
    if not distributed.is_writer():  # rank 0 alone exports, reports and writes metrics.json
        yield Done(seg_summary)
        return
    onnx_info = yield from run_onnx_export(run, slices.images, cancel)
    report = yield from relay(ground_truth_report(run, slices, targets, has_target, source, val_idx, dev, cancel),
                              budget.with_eta)
    metrics = {"complete": True, "device": str(dev), "seconds": round(clock() - started, 2),
               "stage1": stage1_metrics, "segmenter": {**seg_summary, "n_pixel_labelled": n_pixel,
                                                       "n_pseudo": int(sum(has_target[i] for i, src in
                                                                           enumerate(source) if src == "pseudo")),
                                                       "synthetic": supply.report},
               "plan": budget.summary(stage1_s, budget.elapsed() - stage2_start),
               "onnx": onnx_info, "ground_truth_report": report}
    run.write_json(METRICS_NAME, metrics)
    yield Done(metrics)


def train_on_targets(slices, targets: np.ndarray, out: str | Path, cfg: TrainConfig, device: str = "auto",
                     cancel: CancelToken | None = None, note: str = "given targets",
                     always_train: np.ndarray | None = None, clock=time.monotonic, synthetic: str = "off"):
    """Generator job: the segmenter alone on given per-slice targets (n, H, W) 0/1/255, into run folder `out`
    (resumable like train_job, sized like its stage 2: a budget goes to the segmenter whole). For full
    supervision on reviewed masks, benchmarks and self-training rounds. `always_train` (bool per slice) keeps
    those slices out of the validation split. The segmenter starts where train_job's does (cfg.init).
    `synthetic` "auto" mixes in synthetic lesions on the slices labelled clean as train_job's stage 2 does (the
    same recipe with given targets instead of pseudo masks); "off" trains on the targets alone."""
    started = clock()
    cancel = cancel or CancelToken()
    dev = resolve_device(device)
    check_config(cfg, dev)
    run = RunFolder(out)
    has = np.array([(t != IGNORE).any() for t in targets])
    h = hashlib.sha1(data_fingerprint(slices).encode())
    h.update(np.ascontiguousarray(targets).tobytes())
    data_info = {"path": note, "n_slices": len(slices), "shape": list(slices.images.shape[1:]),
                 "labels": slices.counts(), "fingerprint": h.hexdigest()}
    options = {**cfg.options(), "synthetic": synthetic}    # what this job mixes in, not the config's default
    if run.exists():
        run.check_resumable(run.read_config(), options, data_info)
    else:
        run.create(options, data_info, str(dev))
    budget = _Budget(run, cfg, dev, max(slices.images.shape[1:]), clock, started)
    has_fg = np.array([(t == 1).any() for t in targets])
    train_idx, val_idx = split_validation(slices.groups, np.flatnonzero(has), cfg.val_fraction, cfg.seed, has_fg,
                                          always_train)
    supply = study_supply(slices, run, synthetic, cfg.lung_method, cfg.seed, budget.plan.size, len(val_idx))
    for line in supply.notes:
        yield Message(line)
    seg_data = prepare_segmenter_data(slices.images, targets, train_idx, val_idx, budget.plan.size,
                                      supply.source, supply.share, supply.n_validation)
    yield from budget.plan_stage2(seg_data, cfg, dev, cancel, 0)
    resolved = budget.resolved(cfg)
    init_state = yield from _segmenter_start(resolved)     # the same start as train_job's segmenter
    summary = yield from relay(train_segmenter(seg_data, resolved, run, dev, cancel, init_state), budget.with_eta)
    metrics = {"complete": True, "device": str(dev), "targets": note,
               "segmenter": {**summary, "synthetic": supply.report},
               "plan": budget.summary(None, budget.elapsed())}
    run.write_json(METRICS_NAME, metrics)
    yield Done(metrics)
