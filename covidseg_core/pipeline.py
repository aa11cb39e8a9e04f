"""The whole `train` job: labels -> stage 1 (weak/: classifier, fused CAMs, pseudo masks) -> stage 2 (seg/:
targets, the segmenter) -> a report against ground truth. weak/ and seg/ never import each other; this module
joins them, through the run folder (the pseudo masks stage 1 writes are what stage 2 reads).

One run folder holds it all (runs.py) and the job is resumable: re-running the same command on the same RUN
skips a finished stage 1 and continues the segmenter from its last checkpoint (seg/training.py).
Ground-truth masks of the data set (`masks/`) are for reporting only and never reach the loss, the validation
loss or the checkpoint choice (seg/targets.py).
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import torch

from .constants import FUSION_MODES, IGNORE
from .data import load_slice_set
from .errors import InputError
from .events import CancelToken, Done, Message, relay
from .infer.device import resolve_device
from .infer.model import load_run_model
from .infer.predict import predict_masks
from .results.metrics import summarize
from .runs import METRICS_NAME, STAGE1_DONE_NAME, RunFolder
from .seg.targets import build_targets, split_validation
from .seg.training import prepare_segmenter_data, train_segmenter
from .train_config import TrainConfig
from .weak.config import Stage1Config
from .weak.job import run_stage1

log = logging.getLogger(__name__)


# --- data --------------------------------------------------------------------------------------------------

def data_fingerprint(slices) -> str:
    """Identifies the training data (images, ids, labels); the ground-truth masks are deliberately left out."""
    h = hashlib.sha1()
    h.update(repr((list(slices.ids), list(slices.labels), slices.images.shape)).encode())
    h.update(np.round(slices.images * 255).astype(np.uint8).tobytes())
    return h.hexdigest()


# --- the whole job -----------------------------------------------------------------------------------------

def stage1_config(cfg: TrainConfig, device: torch.device) -> Stage1Config:
    """The stage-1 options of a `train` run."""
    return Stage1Config(fusion=cfg.fusion, size=cfg.size, cls_epochs=cfg.cls_epochs, seed=cfg.seed,
                        device=str(device.type))


def run_stage1_once(slices, run: RunFolder, cfg: TrainConfig, device: torch.device, cancel: CancelToken):
    """Generator: stage 1 into RUN/ unless a finished stage 1 is there already; returns its metrics."""
    done = run.read_json(STAGE1_DONE_NAME)
    if done is not None and done.get("finished"):
        yield Message("stage 1 already finished in this run: reusing its pseudo masks")
        return done.get("metrics") or {}
    metrics = yield from relay(run_stage1(slices, run.path, stage1_config(cfg, device), cancel, log_epochs=True))
    metrics = metrics or {}
    run.write_json(STAGE1_DONE_NAME, {"finished": True, "metrics": metrics})
    return metrics


def _gt_report(model_run: RunFolder, slices, targets, has_target, source, val_idx, device, cancel):
    """Reporting only: the segmenter's and the pseudo masks' agreement with the data set's ground truth."""
    have = np.flatnonzero(slices.has_gt) if slices.has_gt is not None else np.zeros(0, int)
    if len(have) == 0:
        return None
    lm = load_run_model(model_run.path, device)
    preds = yield from predict_masks(lm, slices.images[have], cancel=cancel)
    gts = slices.gt_masks[have]
    report = {"note": "ground truth (masks/) is used for this report only, never for training",
              "segmenter_all": summarize(list(preds), list(gts))}
    val_set = set(int(i) for i in val_idx)
    in_val = [k for k, i in enumerate(have) if int(i) in val_set]
    if in_val:
        report["segmenter_validation"] = summarize([preds[k] for k in in_val], [gts[k] for k in in_val])
    pseudo = [k for k, i in enumerate(have) if source[i] == "pseudo"]
    if pseudo:
        report["pseudo_masks"] = summarize([targets[have[k]] == 1 for k in pseudo], [gts[k] for k in pseudo])
        report["segmenter_on_pseudo_slices"] = summarize([preds[k] for k in pseudo], [gts[k] for k in pseudo])
    return report


def train_job(data: str | Path, out: str | Path, cfg: TrainConfig | None = None, device: str = "auto",
              cancel: CancelToken | None = None, labels_csv: str | Path | None = None, slices=None):
    """Generator job for `covidseg train`: yields Progress / Message / EpochReport, ends with Done(metrics).

    `slices` may pass an already loaded SliceSet (the app does); otherwise `data` is read with load_slice_set.
    """
    cfg = cfg or TrainConfig()
    cancel = cancel or CancelToken()
    started = time.monotonic()
    dev = resolve_device(device)
    if cfg.seg_epochs < 1 or cfg.cls_epochs < 1:
        raise InputError("--cls-epochs and --seg-epochs must be at least 1.")
    if cfg.fusion not in FUSION_MODES:
        raise InputError(f"Unknown fusion '{cfg.fusion}'.", "Use avg, max or none.")
    if cfg.pixel_labels and not Path(cfg.pixel_labels).is_dir():
        raise InputError(f"--pixel-labels folder {cfg.pixel_labels} does not exist.", "Check the path.")
    if slices is None:
        yield Message(f"reading {data}")
        slices = load_slice_set(data, labels_csv)
    if len(slices) == 0:
        raise InputError(f"{data} holds no slices.")
    run = RunFolder(out)
    options = cfg.options()
    data_info = {"path": str(Path(data).resolve()) if data else None, "n_slices": len(slices),
                 "shape": list(slices.images.shape[1:]), "labels": slices.counts(),
                 "fingerprint": data_fingerprint(slices)}
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

    stage1_metrics = yield from run_stage1_once(slices, run, cfg, dev, cancel)
    pixel_dir = Path(cfg.pixel_labels) if cfg.pixel_labels else None
    targets, has_target, source = build_targets(slices, run.pseudo_dir, pixel_dir)
    n_pixel = source.count("pixel")
    if n_pixel:
        yield Message(f"{n_pixel} slice(s) with your pixel masks are used as full supervision")
    has_fg = np.array([(t == 1).any() for t in targets])
    train_idx, val_idx = split_validation(slices.groups, np.flatnonzero(has_target), cfg.val_fraction, cfg.seed,
                                          has_fg, always_train=np.array([src == "pixel" for src in source]))
    seg_data = prepare_segmenter_data(slices.images, targets, train_idx, val_idx, cfg.size)
    seg_summary = yield from train_segmenter(seg_data, cfg, run, dev, cancel)
    report = yield from _gt_report(run, slices, targets, has_target, source, val_idx, dev, cancel)
    metrics = {"complete": True, "device": str(dev), "seconds": round(time.monotonic() - started, 2),
               "stage1": stage1_metrics, "segmenter": {**seg_summary, "n_pixel_labelled": n_pixel,
                                                       "n_pseudo": source.count("pseudo")},
               "ground_truth_report": report}
    run.write_json(METRICS_NAME, metrics)
    yield Done(metrics)


def train_on_targets(slices, targets: np.ndarray, out: str | Path, cfg: TrainConfig, device: str = "auto",
                     cancel: CancelToken | None = None, note: str = "given targets",
                     always_train: np.ndarray | None = None):
    """Generator job: the segmenter alone on given per-slice targets (n, H, W) 0/1/255, into run folder `out`
    (resumable like train_job). For full supervision on reviewed masks, benchmarks and self-training rounds.
    `always_train` (bool per slice) keeps those slices out of the validation split."""
    dev = resolve_device(device)
    run = RunFolder(out)
    has = np.array([(t != IGNORE).any() for t in targets])
    h = hashlib.sha1(data_fingerprint(slices).encode())
    h.update(np.ascontiguousarray(targets).tobytes())
    data_info = {"path": note, "n_slices": len(slices), "shape": list(slices.images.shape[1:]),
                 "labels": slices.counts(), "fingerprint": h.hexdigest()}
    options = cfg.options()
    if run.exists():
        run.check_resumable(run.read_config(), options, data_info)
    else:
        run.create(options, data_info, str(dev))
    has_fg = np.array([(t == 1).any() for t in targets])
    train_idx, val_idx = split_validation(slices.groups, np.flatnonzero(has), cfg.val_fraction, cfg.seed, has_fg,
                                          always_train)
    seg_data = prepare_segmenter_data(slices.images, targets, train_idx, val_idx, cfg.size)
    summary = yield from train_segmenter(seg_data, cfg, run, dev, cancel)
    metrics = {"complete": True, "device": str(dev), "targets": note, "segmenter": summary}
    run.write_json(METRICS_NAME, metrics)
    yield Done(metrics)
