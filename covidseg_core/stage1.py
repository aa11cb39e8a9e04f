"""Stage 1 as a job: slice labels -> CAM classifier -> fused CAMs -> pseudo masks, written to a run folder.

```
RUN/config.json          written only when RUN is new (a `covidseg train` run already has one); the stage-1
                         options are also kept in RUN/stage1_config.json
RUN/epochs.jsonl         one line per classifier epoch (only when this job made RUN; `train` logs them itself)
RUN/classifier.pt        the classifier (state dict + spec), written atomically after the last epoch
RUN/cams/<file>.png      fused CAM of each infected slice, 0-255
RUN/lungs/<file>.png     lung field used as background cue, 0/255
RUN/pseudo/<file>.png    pseudo mask: 0 background, 255 infection, 127 ignore (clean slices all background)
RUN/metrics.json         status "complete" with counts, classifier accuracy/AUC and (when ground truth exists)
                         pseudo-mask agreement; or status "failed"/"cancelled" with the reason
```

`size`: slices are processed with their longer side resized to `size` (aspect kept; None = native size, as
in stage 2); CAMs, lung fields and pseudo masks are computed at that size and written at the slice's own size.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_write, atomic_write_json
from .cam import FusionBank, check_fusion, normalise_cams, upsample
from .errors import Cancelled, InputError, LabelError, TrainingError
from .events import CancelToken, Done, EpochReport, Message, Progress
from .lungs import lung_field, lung_saliency
from .models.classifier import STRIDE, build_classifier, recalibrate_batchnorm
from .pseudo_masks import PseudoMaskParams, clean_pseudo_mask, make_pseudo_mask, to_png_values

log = logging.getLogger(__name__)

MIN_PER_CLASS = 2        # labelled slices needed of each class, at the very least
STAGE1_CONFIG_NAME = "stage1_config.json"
BN_CALIBRATION_SLICES = 256   # labelled slices used after each epoch to re-estimate BatchNorm statistics

__all__ = ["Stage1Config", "run_stage1", "lung_field", "make_pseudo_mask", "train_classifier",
           "compute_cams", "MIN_PER_CLASS"]


@dataclass
class Stage1Config(PseudoMaskParams):
    fusion: str = "avg"               # avg | max | none
    device: str = "auto"              # auto | cpu | cuda
    size: int | None = None           # longer side in pixels; None = native size
    cls_epochs: int = 8               # what the zenodo-dev benchmark measured
    seed: int = 0
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 8                    # channels of the classifier's first layer
    preview_ids: list[str] = field(default_factory=list)   # slices whose maps each EpochReport carries
    n_preview: int = 4                # when preview_ids is empty: this many infected slices, evenly spread
    write_lungs: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- checks ------------------------------------------------------------------------------------------------

def check_inputs(slices, config: Stage1Config) -> None:
    check_fusion(config.fusion)
    if config.cls_epochs < 1:
        raise InputError("--cls-epochs must be at least 1.")
    if config.size is not None and int(config.size) < 32:
        raise InputError(f"--size {config.size} is too small.", "Use at least 32 pixels, or leave it out.")
    if len(slices) == 0:
        raise InputError("The data set holds no slices.")
    counts = slices.counts()
    if counts["infected"] < MIN_PER_CLASS or counts["clean"] < MIN_PER_CLASS:
        raise LabelError(f"Stage 1 needs at least {MIN_PER_CLASS} slices labelled 'infected' and {MIN_PER_CLASS} "
                         f"labelled 'clean'; found {counts['infected']} infected and {counts['clean']} clean.",
                         "Label more slices of each kind (a few dozen of each works much better).")
    imgs = slices.images
    if not np.isfinite(imgs).all():
        raise InputError("Some slices contain NaN or infinite values.", "Check the source images.")
    labelled = np.array([lab is not None for lab in slices.labels])
    sub = imgs[labelled]
    if float(np.ptp(sub)) == 0.0 or bool(np.all(sub == sub[:1])):
        raise InputError("All labelled slices are identical images; there is nothing to learn from.",
                         "Check that the right images were loaded.")


def _resolve_device(name: str) -> torch.device:
    from .inference import resolve_device
    return resolve_device(name)


def _autocast(device: torch.device):
    from .inference import autocast
    return autocast(device)


def _work_images(images01: np.ndarray, size: int | None) -> np.ndarray:
    """(n, H, W) -> (n, h, w) float32 at the working size (longer side = size)."""
    from .inference import resize_stack, working_shape
    h, w = working_shape(images01.shape[1], images01.shape[2], size)
    if (h, w) == tuple(images01.shape[1:]):
        return np.ascontiguousarray(images01, dtype=np.float32)
    t = resize_stack(torch.from_numpy(np.ascontiguousarray(images01, dtype=np.float32))[:, None], (h, w))
    return t[:, 0].numpy()


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN when one class is missing."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):                       # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# --- classifier training -----------------------------------------------------------------------------------

@torch.no_grad()
def compute_cams(model, images: np.ndarray, device: torch.device, batch_size: int = 64,
                 cancel: CancelToken | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Infected probabilities (n,) and normalised CAMs (n, h/4, w/4) of working-size images (n, h, w)."""
    model.eval()
    probs, cams = [], []
    for start in range(0, len(images), batch_size):
        if cancel is not None:
            cancel.raise_if_cancelled()
        x = torch.from_numpy(images[start:start + batch_size])[:, None].to(device)
        with _autocast(device):
            logits, cam = model.logits_and_cam(x)
        probs.append(torch.sigmoid(logits.float()).cpu().numpy())
        cams.append(normalise_cams(cam.float()).cpu().numpy())
    return np.concatenate(probs), np.concatenate(cams)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip (so which side of the image the lung is on cannot be the feature learned: in half
    slices one side is mostly infected) and a mild brightness/contrast jitter."""
    n = x.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    scale = 1.0 + 0.1 * (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1)
    shift = 0.05 * (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1)
    return (x * scale + shift).clamp(0.0, 1.0)


def _pick_previews(config: Stage1Config, ids: list[str], infected_idx: np.ndarray) -> list[int]:
    pos = {sid: i for i, sid in enumerate(ids)}
    if config.preview_ids:
        unknown = [p for p in config.preview_ids if p not in pos]
        if unknown:
            raise InputError(f"Preview slices not in the data: {unknown[:3]}.")
        return [pos[p] for p in config.preview_ids]
    k = min(config.n_preview, len(infected_idx))
    if k == 0:
        return []
    return [int(infected_idx[j]) for j in np.linspace(0, len(infected_idx) - 1, k).round().astype(int)]


def train_classifier(images: np.ndarray, labels: list[str | None], config: Stage1Config, device: torch.device,
                     cancel: CancelToken | None = None, track_idx: np.ndarray | None = None,
                     preview_idx: list[int] | None = None, ids: list[str] | None = None,
                     out_shape: tuple[int, int] | None = None):
    """Generator: trains the classifier on working-size images (n, h, w) with labels infected/clean/None,
    yields Progress and EpochReport events, and returns (model, bank, history).

    After every epoch the CAMs of `track_idx` (default: the infected slices) are computed; those of slices the
    classifier calls infected (and that are not labelled clean) are fused into `bank` (a FusionBank over
    track_idx, all fusion modes). Raises TrainingError on a non-finite loss, Cancelled when cancelled.
    """
    cancel = cancel or CancelToken()
    labels_arr = np.array([lab or "" for lab in labels])
    train_idx = np.flatnonzero((labels_arr == "infected") | (labels_arr == "clean"))
    target = (labels_arr == "infected").astype(np.float32)
    if track_idx is None:
        track_idx = np.flatnonzero(labels_arr == "infected")
    track_idx = np.asarray(track_idx, dtype=int)
    preview_idx = list(preview_idx or [])
    ids = ids or [str(i) for i in range(len(images))]
    out_shape = out_shape or tuple(images.shape[1:])
    pos_fraction = float(target[train_idx].mean())

    torch.manual_seed(config.seed)
    np_rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = build_classifier({"width": config.width}).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    epochs = int(config.cls_epochs)
    steps_per_epoch = max(1, int(np.ceil(len(train_idx) / config.batch_size)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.2)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    cam_shape = (int(np.ceil(images.shape[1] / STRIDE)), int(np.ceil(images.shape[2] / STRIDE)))
    bank = FusionBank(len(track_idx), cam_shape)
    track_pos = {int(s): k for k, s in enumerate(track_idx)}
    eval_idx = np.union1d(train_idx, track_idx)
    history = []
    images_t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    target_t = torch.from_numpy(target)

    for epoch in range(1, epochs + 1):
        started = time.monotonic()
        model.train()
        order = np_rng.permutation(train_idx)
        total_loss, n_seen = 0.0, 0
        for b in range(steps_per_epoch):
            cancel.raise_if_cancelled()
            batch = order[b * config.batch_size:(b + 1) * config.batch_size]
            if len(batch) == 0:
                continue
            x = _augment(images_t[batch][:, None], gen).to(device)
            y = target_t[batch].to(device)
            with _autocast(device):
                logits = model(x)
            loss = _balanced_bce(logits.float(), y, pos_fraction)
            if not torch.isfinite(loss):
                raise TrainingError(f"The classifier's loss became {float(loss.detach())} at epoch {epoch}, "
                                    f"batch {b + 1}.",
                                    "Lower the learning rate, or check the images for corrupt values.")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            total_loss += float(loss.detach()) * len(batch)
            n_seen += len(batch)
            yield Progress("classifier", (epoch - 1) * steps_per_epoch + b + 1, epochs * steps_per_epoch,
                           f"epoch {epoch}/{epochs}")
        calib = np_rng.permutation(train_idx)[:BN_CALIBRATION_SLICES]
        recalibrate_batchnorm(model, (images_t[calib[s:s + config.batch_size]][:, None].to(device)
                                      for s in range(0, len(calib), config.batch_size)))
        probs = np.zeros(len(images), dtype=np.float32)
        p_eval, cams_eval = compute_cams(model, images[eval_idx], device, cancel=cancel)
        probs[eval_idx] = p_eval
        eval_pos = {int(s): k for k, s in enumerate(eval_idx)}
        cams_track = cams_eval[[eval_pos[int(s)] for s in track_idx]] if len(track_idx) else cams_eval[:0]
        called = (probs[track_idx] >= 0.5) & (labels_arr[track_idx] != "clean")
        bank.update(np.arange(len(track_idx)), cams_track, called)

        y_true = target[train_idx] > 0.5
        pred = probs[train_idx] >= 0.5
        metrics = {"accuracy": float((pred == y_true).mean()), "auc": roc_auc(probs[train_idx], y_true),
                   "sensitivity": float(pred[y_true].mean()) if y_true.any() else float("nan"),
                   "specificity": float((~pred[~y_true]).mean()) if (~y_true).any() else float("nan"),
                   "fused_slices": int(called.sum())}
        maps = {}
        for i in preview_idx:
            k = track_pos.get(int(i))
            if k is None:
                continue
            maps[ids[i]] = {"cam": upsample(bank.last[k], out_shape),
                            "fused": upsample(bank.fused(config.fusion, [k])[0], out_shape)}
        seconds = time.monotonic() - started
        losses = {"loss": total_loss / max(n_seen, 1)}
        history.append({"stage": "classifier", "epoch": epoch, **losses, **metrics, "seconds": round(seconds, 3)})
        yield EpochReport("classifier", epoch, epochs, losses=losses, metrics=metrics, maps=maps, seconds=seconds)
    return model, bank, history


def _balanced_bce(logits: torch.Tensor, targets: torch.Tensor, pos_fraction: float) -> torch.Tensor:
    from .losses import balanced_bce
    return balanced_bce(logits, targets, pos_fraction=pos_fraction)


# --- the job -----------------------------------------------------------------------------------------------

def _png_name(slice_id: str) -> str:
    from .training import pseudo_mask_path
    return pseudo_mask_path(Path("."), slice_id).name


def _write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image
    atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))


def _to_native(arr: np.ndarray, shape: tuple[int, int], nearest: bool) -> np.ndarray:
    if tuple(arr.shape) == tuple(shape):
        return arr
    import cv2
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(arr, (shape[1], shape[0]), interpolation=interp)


def _start_run(out_dir: Path, config: Stage1Config, slices, device: torch.device) -> bool:
    """Write the stage-1 config; create RUN/config.json when RUN is new. True when this job owns the run."""
    from .runs import RunFolder
    run = RunFolder(out_dir)
    owns = not run.exists()
    if owns:
        run.create({"stage": "pseudo", **config.to_dict()},
                   {"n_slices": len(slices), "shape": list(slices.images.shape[1:]), "labels": slices.counts()},
                   str(device))
    atomic_write_json(out_dir / STAGE1_CONFIG_NAME, {"device": str(device), **config.to_dict()})
    if owns:
        (out_dir / "epochs.jsonl").unlink(missing_ok=True)
    return owns


def _append_epoch(path: Path, record: dict) -> None:
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    line = json.dumps(record, default=float) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(old + line, encoding="utf-8"))


def run_stage1(slices, out_dir: Path, config: Stage1Config, cancel: CancelToken | None = None):
    """Generator job: yields Message / Progress / EpochReport and ends with Done(result=metrics dict).

    Raises LabelError (too few labels), InputError (unusable images or options), TrainingError (NaN loss) and
    Cancelled; in those cases RUN/metrics.json says status "failed" or "cancelled" and why.
    """
    config = dataclasses.replace(config, fusion=check_fusion(config.fusion))
    cancel = cancel or CancelToken()
    out_dir = Path(out_dir)
    check_inputs(slices, config)
    device = _resolve_device(config.device)
    started = time.monotonic()
    owns = _start_run(out_dir, config, slices, device)
    metrics_path = out_dir / "metrics.json"
    try:
        result = yield from _run(slices, out_dir, config, cancel, device, owns, started)
    except Cancelled as exc:
        atomic_write_json(metrics_path, {"status": "cancelled", "reason": str(exc)})
        raise
    except (TrainingError, InputError) as exc:
        atomic_write_json(metrics_path, {"status": "failed", "reason": str(exc), "error": type(exc).__name__})
        raise
    atomic_write_json(metrics_path, result)
    yield Done(result=result)


def _run(slices, out_dir: Path, config: Stage1Config, cancel: CancelToken, device: torch.device, owns: bool,
         started: float):
    native = tuple(slices.images.shape[1:])
    yield Message(f"stage 1 on {device}: {slices.counts()}")
    work = _work_images(slices.images, config.size)
    infected_idx = slices.indices("infected")
    clean_idx = slices.indices("clean")
    previews = _pick_previews(config, slices.ids, infected_idx)
    job = train_classifier(work, slices.labels, config, device, cancel, track_idx=infected_idx,
                           preview_idx=previews, ids=slices.ids, out_shape=native)
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            model, bank, history = stop.value
            break
        if isinstance(event, EpochReport) and owns:
            _append_epoch(out_dir / "epochs.jsonl", {"stage": "classifier", "epoch": event.epoch, **event.losses,
                                                      **event.metrics, "seconds": round(event.seconds, 3)})
        yield event

    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "spec": model.spec,
             "size": config.size, "epoch": int(config.cls_epochs)}
    atomic_write(out_dir / "classifier.pt", lambda tmp: torch.save(state, tmp))

    fused = bank.fused(config.fusion)
    work_shape = tuple(work.shape[1:])
    pseudo_dir, cam_dir, lung_dir = out_dir / "pseudo", out_dir / "cams", out_dir / "lungs"
    pseudo_native = {}
    n_fg = n_ignore = 0
    todo = list(infected_idx) + list(clean_idx)
    for step, i in enumerate(todo):
        if step % 16 == 0:
            cancel.raise_if_cancelled()
            yield Progress("pseudo", step, len(todo))
        name = _png_name(slices.ids[i])
        if slices.labels[i] == "infected":
            k = int(np.searchsorted(infected_idx, i))
            cam = upsample(fused[k], work_shape)
            lung = lung_field(work[i])
            mask = make_pseudo_mask(work[i], cam, lung, config, saliency=lung_saliency(work[i], lung))
            cam_native = _to_native(cam, native, nearest=False)
            _write_png(cam_dir / name, np.round(cam_native * 255).astype(np.uint8))
            if config.write_lungs:
                _write_png(lung_dir / name, _to_native(lung.astype(np.uint8), native, True) * 255)
        else:
            mask = clean_pseudo_mask(work_shape)
        mask = _to_native(mask, native, nearest=True)
        n_fg += int((mask == 1).sum())
        n_ignore += int((mask == 255).sum())
        pseudo_native[i] = mask
        _write_png(pseudo_dir / name, to_png_values(mask))
    yield Progress("pseudo", len(todo), len(todo))

    last = history[-1] if history else {}
    result = {"status": "complete", "device": str(device), "fusion": config.fusion,
              "seconds": round(time.monotonic() - started, 2),
              "counts": {**slices.counts(), "pseudo_masks": len(todo), "fused_slices": int((bank.count > 0).sum()),
                         "foreground_pixels": n_fg, "ignore_pixels": n_ignore},
              "classifier": {"train_accuracy": last.get("accuracy"), "train_auc": last.get("auc"),
                             "epochs": int(config.cls_epochs)}}
    result["ground_truth_report"] = pseudo_report(slices, pseudo_native)
    return result


def pseudo_report(slices, pseudo: dict[int, np.ndarray]) -> dict | None:
    """Reporting only: agreement of the pseudo masks' foreground with ground truth, over infected slices."""
    if slices.gt_masks is None:
        return None
    from .metrics import summarize
    has = slices.has_gt if slices.has_gt is not None else np.ones(len(slices), bool)
    idx = [i for i in pseudo if has[i] and slices.labels[i] == "infected"]
    if not idx:
        return None
    report = summarize([pseudo[i] == 1 for i in idx], [slices.gt_masks[i] > 0 for i in idx])
    report["note"] = "pseudo-mask foreground vs ground truth on infected slices; ignore counts as not infection"
    return report
