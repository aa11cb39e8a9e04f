"""Stage 2 and the whole `train` job: labels -> classifier -> fused CAMs -> pseudo masks -> segmenter.

One run folder holds it all (runs.py) and the job is resumable: re-running the same command on the same RUN
skips a finished stage 1 and continues the segmenter from its last checkpoint. Every epoch draws its shuffling,
augmentation and dropout from (seed, epoch), so a resumed run trains exactly like an uninterrupted one.

Supervision of the segmenter, per slice: the user's pixel mask (`--pixel-labels`) when there is one, else the
stage-1 pseudo mask (0 background, 1 infection, 255 ignore -> no loss). Ground-truth masks of the data set
(`masks/`) are for reporting only and never reach the loss, the validation loss or the checkpoint choice.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import InputError, RunError, TrainingError
from .events import CancelToken, Done, EpochReport, Message, Progress
from .inference import autocast, resize_stack, resolve_device, working_shape
from .losses import IGNORE, tversky_focal_loss
from .runs import BEST, LAST, METRICS_NAME, RunFolder

log = logging.getLogger(__name__)

STAGE1_DONE = "stage1.json"


@dataclass
class TrainConfig:
    """What `covidseg train` asks for. All fields but `device` must match to resume a run."""
    fusion: str = "avg"               # avg | max | none (stage-1 attention fusion)
    size: int | None = 256            # longer side slices are scaled to in both stages (None = native)
    cls_epochs: int = 30
    seg_epochs: int = 40
    seed: int = 0
    model: str = "light"              # see models.segmenter.SEGMENTER_NAMES
    base: int | None = None           # network width (None = the model's default)
    batch_size: int = 8
    lr: float = 1e-3
    val_fraction: float = 0.2
    crop: int | None = None           # train on random crops of this side (cheaper steps); None = whole slices
    steps_per_epoch: int | None = None  # cap on batches per segmenter epoch (large data sets); None = one pass
    pixel_labels: str | None = None   # folder of user masks (PNG 0/255 named as the images)
    fast: bool = False

    def options(self) -> dict:
        opts = dataclasses.asdict(self)
        opts["model_spec"] = self.model_spec()
        return opts

    def model_spec(self) -> dict:
        options = {} if self.base is None else {"base": int(self.base)}
        return {"name": self.model, "in_ch": 1, "options": options}


# The --fast preset: the whole pipeline on the synthetic demo in about a minute on a 2-core CPU. Stage 1 needs
# the demo's native 128 pixels (at 64 its pseudo masks lose most lesions); the segmenter trains on 64-pixel
# crops of them, a quarter of the cost per step, and predicts whole slices.
FAST_PRESET = dict(size=128, cls_epochs=12, seg_epochs=12, base=12, batch_size=4, lr=5e-3, crop=64)


def fast_config(**overrides) -> TrainConfig:
    return TrainConfig(**{**FAST_PRESET, "fast": True, **overrides})


# --- data --------------------------------------------------------------------------------------------------

def data_fingerprint(slices) -> str:
    """Identifies the training data (images, ids, labels); the ground-truth masks are deliberately left out."""
    h = hashlib.sha1()
    h.update(repr((list(slices.ids), list(slices.labels), slices.images.shape)).encode())
    h.update(np.round(slices.images * 255).astype(np.uint8).tobytes())
    return h.hexdigest()


def split_validation(groups: list[str], candidates: np.ndarray, fraction: float, seed: int,
                     has_foreground: np.ndarray | None = None, always_train: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices out of `candidates`. By volume when there are several (neighbouring slices of one
    patient are near-duplicates), else by blocks of neighbouring slices (every fifth block validates; of the
    five possible block sets, the one holding most slices whose training target has foreground, so that the
    validation loss can tell a net that finds lesions from one that predicts nothing)."""
    candidates = np.asarray(candidates, dtype=int)
    if len(candidates) < 5 or fraction <= 0:
        return candidates, np.zeros(0, dtype=int)
    cand_groups = np.array([groups[i] for i in candidates])
    unique = sorted(set(cand_groups.tolist()))
    if len(unique) > 1:
        rng = np.random.default_rng(seed)
        order = [unique[i] for i in rng.permutation(len(unique))]
        val_groups: list[str] = []
        n_val = 0
        for g in order[:-1]:                                  # at least one volume stays for training
            if n_val >= fraction * len(candidates):
                break
            val_groups.append(g)
            n_val += int((cand_groups == g).sum())
        is_val = np.isin(cand_groups, val_groups)
    else:
        block = max(1, int(round(len(candidates) * fraction / 2)))
        period = max(2, int(round(1 / fraction)))
        blocks = (np.arange(len(candidates)) // block) % period
        offsets = [(seed + k) % period for k in range(period)]
        if has_foreground is not None:
            fg = np.asarray(has_foreground, dtype=bool)[candidates]
            offsets.sort(key=lambda o: -int(fg[blocks == o].sum()))    # stable: ties keep the seed's order
        is_val = blocks == offsets[0]
    if always_train is not None:      # the user's pixel masks are too precious to only validate
        is_val &= ~np.asarray(always_train, dtype=bool)[candidates]
    return candidates[~is_val], candidates[is_val]


def pseudo_mask_path(pseudo_dir: Path, slice_id: str) -> Path:
    """RUN/pseudo/<file>.png: an image file's own name when it is a PNG, else <id>.png."""
    from .io.images import IMAGE_SUFFIXES

    name = Path(slice_id).name
    suffix = Path(name).suffix.lower()
    if suffix == ".png":
        return pseudo_dir / name
    # other image files become <stem>.png; volume slice ids (an index, a SOPInstanceUID with dots) keep it all
    return pseudo_dir / (f"{Path(name).stem}.png" if suffix in IMAGE_SUFFIXES else f"{name}.png")


def _read_mask_png(path: Path) -> np.ndarray:
    from .io.images import read_gray

    return read_gray(path)


def build_targets(slices, pseudo_dir: Path | None, pixel_dir: Path | None
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-slice training targets (n, H, W) uint8 0/1/255, which slices have one, and where each came from
    ("pixel", "pseudo" or "")."""
    n, h, w = slices.images.shape
    targets = np.full((n, h, w), IGNORE, dtype=np.uint8)
    has = np.zeros(n, dtype=bool)
    source = [""] * n
    pixel_files: dict[str, Path] = {}
    n_contradicting = 0
    if pixel_dir is not None:
        if not pixel_dir.is_dir():
            raise InputError(f"--pixel-labels folder {pixel_dir} does not exist.", "Check the path.")
        pixel_files = {p.name: p for p in pixel_dir.iterdir() if p.is_file() and p.suffix.lower() == ".png"}
        if not pixel_files:
            raise InputError(f"--pixel-labels folder {pixel_dir} holds no PNG masks.",
                             "Put PNG masks (0/255) named as their images there.")
        by_stem = {Path(k).stem: v for k, v in pixel_files.items()}
        unknown = set(pixel_files) - {pseudo_mask_path(Path("."), i).name for i in slices.ids}
        if unknown:
            shown = ", ".join(sorted(unknown)[:3])
            raise InputError(f"{len(unknown)} mask(s) in {pixel_dir} match no image of the data set ({shown}).",
                             "Name each pixel mask exactly as its image.")
    for i, sid in enumerate(slices.ids):
        pix = None
        if pixel_files:
            pix = pixel_files.get(Path(sid).name) or by_stem.get(Path(sid).stem)
        if pix is not None:
            m = _read_mask_png(pix)
            if m.shape != (h, w):
                raise InputError(f"Pixel mask {pix} is {m.shape[1]}x{m.shape[0]}, its image {w}x{h}.",
                                 "Masks must have the size of their images.")
            targets[i] = (m > 127).astype(np.uint8)
            has[i], source[i] = True, "pixel"
            continue
        if pseudo_dir is None:
            continue
        p = pseudo_mask_path(pseudo_dir, sid)
        if p.is_file():
            m = _read_mask_png(p)
            if m.shape != (h, w):
                raise RunError(f"Pseudo mask {p} does not have the size of its slice.",
                               "The run folder is inconsistent; train again into a new folder.")
            t = np.full((h, w), IGNORE, dtype=np.uint8)
            t[m == 0] = 0
            t[m >= 192] = 1            # 255 = infection; 127 (ignore) stays IGNORE
            if slices.labels[i] == "infected" and not (t == 1).any():
                # the label says there is infection somewhere: an all-background target would teach the opposite
                # (stage 1 found no lesion, e.g. no lung field on this slice), so the slice gives no supervision
                n_contradicting += 1
                continue
            targets[i] = t
            has[i], source[i] = True, "pseudo"
    if n_contradicting:
        log.warning("%d infected slice(s) got a pseudo mask without infection and are left out of stage 2",
                    n_contradicting)
    return targets, has, source


# --- the segmenter loop ------------------------------------------------------------------------------------

@dataclass
class SegmenterData:
    images: torch.Tensor        # (n, 1, h, w) float32 at the working size
    targets: torch.Tensor       # (n, h, w) uint8 0/1/255 at the working size
    train_idx: np.ndarray
    val_idx: np.ndarray


def prepare_segmenter_data(images01: np.ndarray, targets: np.ndarray, train_idx, val_idx,
                           size: int | None) -> SegmenterData:
    n, h, w = images01.shape
    work = working_shape(h, w, size)
    x = resize_stack(torch.from_numpy(np.ascontiguousarray(images01, dtype=np.float32))[:, None], work)
    t = resize_stack(torch.from_numpy(targets)[:, None].float(), work, mode="nearest")[:, 0].to(torch.uint8)
    return SegmenterData(images=x.contiguous(), targets=t.contiguous(), train_idx=np.asarray(train_idx, int),
                         val_idx=np.asarray(val_idx, int))


def _epoch_generator(seed: int, epoch: int) -> tuple[np.random.Generator, torch.Generator]:
    torch.manual_seed(seed * 100003 + epoch)          # dropout etc. inside the network
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    return np.random.default_rng([seed, epoch]), g


def _augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-right flips and a mild contrast/brightness jitter (labels unchanged by the latter)."""
    flip = torch.from_numpy(rng.random(len(x)) < 0.5)
    if flip.any():
        x = x.clone()
        y = y.clone()
        x[flip] = x[flip].flip(-1)
        y[flip] = y[flip].flip(-1)
    gain = torch.from_numpy(rng.uniform(0.9, 1.1, len(x)).astype(np.float32)).view(-1, 1, 1, 1)
    bias = torch.from_numpy(rng.uniform(-0.05, 0.05, len(x)).astype(np.float32)).view(-1, 1, 1, 1)
    return (x * gain + bias).clamp(0, 1), y


FOREGROUND_CROP_RATE = 0.5   # share of crops centred on a target infection pixel (when the slice has one)


def _random_crop(x: torch.Tensor, y: torch.Tensor, crop: int | None, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random crops of side `crop` (no-op when the slices are not larger). Half of the crops of a
    slice with target infection are centred on one of its infection pixels: lesions cover a few percent of a
    slice, and a crop without any teaches the net little (foreground oversampling, as in nnU-Net)."""
    h, w = x.shape[-2:]
    ch, cw = min(crop or h, h), min(crop or w, w)
    if (ch, cw) == (h, w):
        return x, y
    ys = rng.integers(0, h - ch + 1, len(x))
    xs = rng.integers(0, w - cw + 1, len(x))
    centre_on_fg = rng.random(len(x)) < FOREGROUND_CROP_RATE
    for i in np.flatnonzero(centre_on_fg):
        fg = torch.nonzero(y[i] == 1)
        if len(fg):
            cy, cx = fg[int(rng.integers(len(fg)))].tolist()
            ys[i] = min(max(cy - ch // 2, 0), h - ch)
            xs[i] = min(max(cx - cw // 2, 0), w - cw)
    xc = torch.stack([x[i, :, a:a + ch, b:b + cw] for i, (a, b) in enumerate(zip(ys, xs))])
    yc = torch.stack([y[i, a:a + ch, b:b + cw] for i, (a, b) in enumerate(zip(ys, xs))])
    return xc, yc


def _batch_dice(logits: torch.Tensor, target: torch.Tensor) -> tuple[int, int, int]:
    pred = logits[:, 0] > 0
    keep = target != IGNORE
    fg = target == 1
    tp = int((pred & fg & keep).sum())
    fp = int((pred & ~fg & keep).sum())
    fn = int((~pred & fg & keep).sum())
    return tp, fp, fn


def evaluate_loss(model, data: SegmenterData, idx: np.ndarray, device, batch_size: int,
                  cancel: CancelToken | None = None) -> tuple[float, float]:
    """Mean loss and Dice (against the training targets, ignore pixels excluded) over `idx`, in eval mode."""
    model.eval()
    total, weight = 0.0, 0
    tp = fp = fn = 0
    with torch.inference_mode():
        for s in range(0, len(idx), batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            b = idx[s:s + batch_size]
            x = data.images[b].to(device)
            y = data.targets[b].to(device)
            with autocast(device):
                logits = model(x)
            total += float(tversky_focal_loss(logits.float(), y.long())) * len(b)
            weight += len(b)
            a, c, d = _batch_dice(logits.float(), y)
            tp, fp, fn = tp + a, fp + c, fn + d
    model.train()
    denom = 2 * tp + fp + fn
    return total / max(weight, 1), (2 * tp / denom if denom else 1.0)


PRIOR_FOREGROUND = 0.05


def init_head_prior(model: torch.nn.Module, prior: float = PRIOR_FOREGROUND) -> None:
    """Start the logit head at a small foreground probability (the prior trick of the focal-loss paper): a head
    that starts at p=0.5 everywhere spends its first epochs learning that infection is rare."""
    head = getattr(model, "head", None)
    if isinstance(head, torch.nn.Conv2d) and head.out_channels == 1 and head.bias is not None:
        with torch.no_grad():
            head.bias.fill_(float(np.log(prior / (1 - prior))))


def train_segmenter(data: SegmenterData, cfg: TrainConfig, run: RunFolder, device: torch.device,
                    cancel: CancelToken | None = None):
    """Generator: trains (or resumes) the segmenter, checkpointing every epoch; returns a summary dict."""
    from .inference import build_model

    cancel = cancel or CancelToken()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model_spec())
    init_head_prior(model)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    use_scaler = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    start_epoch, best_val, best_epoch = 1, float("inf"), 0
    if run.checkpoint_path(LAST).is_file():
        state = run.load_checkpoint(LAST)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state and use_scaler:
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"]) + 1
        best_val, best_epoch = float(state["best_val"]), int(state["best_epoch"])
        run.drop_epochs_after("segmenter", start_epoch - 1)
        if start_epoch <= cfg.seg_epochs:
            yield Message(f"resuming the segmenter from epoch {start_epoch - 1} of {cfg.seg_epochs}")
    train_idx, val_idx = data.train_idx, data.val_idx
    if len(train_idx) == 0:
        raise TrainingError("No slice has a training mask (pseudo mask or pixel label).",
                            "Label some slices infected or clean, then train again.")
    bs = max(1, min(cfg.batch_size, len(train_idx)))
    val_has_fg = bool(len(val_idx)) and bool((data.targets[torch.from_numpy(val_idx)] == 1).any())
    if len(val_idx) and not val_has_fg and start_epoch == 1:
        yield Message("no validation slice has infection in its training mask: the best checkpoint is chosen "
                      "by training loss", "warning")
    n_batches = (len(train_idx) + bs - 1) // bs
    if cfg.steps_per_epoch:
        n_batches = min(n_batches, cfg.steps_per_epoch)
    model.train()
    for epoch in range(start_epoch, cfg.seg_epochs + 1):
        t0 = time.monotonic()
        rng, _ = _epoch_generator(cfg.seed, epoch)
        order = train_idx[rng.permutation(len(train_idx))]
        if cfg.steps_per_epoch:
            order = order[: cfg.steps_per_epoch * bs]
        running, seen = 0.0, 0
        for bi, s in enumerate(range(0, len(order), bs)):
            cancel.raise_if_cancelled()
            b = order[s:s + bs]
            x, y = _random_crop(data.images[b], data.targets[b], cfg.crop, rng)
            x, y = _augment(x, y, rng)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True).long()
            optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                logits = model(x)
            loss = tversky_focal_loss(logits.float(), y)
            if not torch.isfinite(loss):
                raise TrainingError(f"The segmenter's loss became {float(loss)} at epoch {epoch}.",
                                    "Lower the learning rate or check the images, then train again into a new "
                                    "folder.")
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            running += float(loss.detach()) * len(b)
            seen += len(b)
            elapsed = time.monotonic() - t0
            yield Progress("segmenter", bi + 1, n_batches, f"epoch {epoch}/{cfg.seg_epochs}",
                           eta_s=elapsed / (bi + 1) * (n_batches - bi - 1))
        train_loss = running / max(seen, 1)
        if len(val_idx) and val_has_fg:
            val_loss, val_dice = evaluate_loss(model, data, val_idx, device, bs * 2, cancel)
        else:   # too few slices held out, or none with a lesion to find: choose by training loss
            val_loss, val_dice = train_loss, float("nan")
        improved = val_loss < best_val
        if improved:
            best_val, best_epoch = val_loss, epoch
        spec = cfg.model_spec()
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        if improved:    # best first: if we die between the two writes, resuming redoes this epoch identically
            run.save_checkpoint({"model": weights, "epoch": epoch, "val_loss": val_loss, "spec": spec}, BEST)
        last = {"model": weights, "optimizer": optimizer.state_dict(), "epoch": epoch, "best_val": best_val,
                "best_epoch": best_epoch, "spec": spec}
        if use_scaler:
            last["scaler"] = scaler.state_dict()
        run.save_checkpoint(last, LAST)
        seconds = time.monotonic() - t0
        record = {"stage": "segmenter", "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                  "val_dice_vs_targets": val_dice, "best_epoch": best_epoch, "seconds": round(seconds, 3)}
        run.append_epoch(record)
        yield EpochReport("segmenter", epoch, cfg.seg_epochs, losses={"train": train_loss, "val": val_loss},
                          metrics={"val_dice_vs_targets": val_dice}, seconds=seconds)
    return {"epochs": cfg.seg_epochs, "best_epoch": best_epoch, "best_val_loss": best_val,
            "n_train": int(len(train_idx)), "n_val": int(len(val_idx))}


# --- the whole job -----------------------------------------------------------------------------------------

def _stage1_config(cfg: TrainConfig, device: torch.device):
    from .stage1 import Stage1Config

    wanted = {"fusion": cfg.fusion, "size": cfg.size, "epochs": cfg.cls_epochs, "cls_epochs": cfg.cls_epochs,
              "seed": cfg.seed, "device": str(device.type)}
    names = {f.name for f in dataclasses.fields(Stage1Config)}
    return Stage1Config(**{k: v for k, v in wanted.items() if k in names})


def run_stage1_once(slices, run: RunFolder, cfg: TrainConfig, device: torch.device, cancel: CancelToken):
    """Generator: stage 1 into RUN/ unless a finished stage 1 is there already; returns its metrics."""
    done = run.read_json(STAGE1_DONE)
    if done is not None and done.get("finished"):
        yield Message("stage 1 already finished in this run: reusing its pseudo masks")
        return done.get("metrics") or {}
    from .stage1 import run_stage1

    metrics = {}
    for event in run_stage1(slices, run.path, _stage1_config(cfg, device), cancel):
        if isinstance(event, Done):
            metrics = event.result or {}
            continue
        if isinstance(event, EpochReport):
            run.append_epoch({"stage": event.stage, "epoch": event.epoch, **event.losses, **event.metrics,
                              "seconds": round(event.seconds, 3)})
        yield event
    run.write_json(STAGE1_DONE, {"finished": True, "metrics": metrics})
    return metrics


def _gt_report(model_run: RunFolder, slices, targets, has_target, source, val_idx, device, cancel):
    """Reporting only: the segmenter's and the pseudo masks' agreement with the data set's ground truth."""
    from .inference import load_run_model, predict_masks
    from .metrics import summarize

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
    from .data import load_slice_set

    cfg = cfg or TrainConfig()
    cancel = cancel or CancelToken()
    started = time.monotonic()
    dev = resolve_device(device)
    if cfg.seg_epochs < 1 or cfg.cls_epochs < 1:
        raise InputError("--cls-epochs and --seg-epochs must be at least 1.")
    if cfg.fusion not in ("avg", "max", "none"):
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
    if final and final.get("complete") and run.checkpoint_path(BEST).is_file():
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
