"""Training the CAM classifier, epoch by epoch, and fusing each epoch's CAMs into a FusionBank (weak/cam.py).

Each epoch is two jobs, kept apart: `_train_epoch` (batches through the shared TrainStep) and `_fuse_epoch`
(BatchNorm re-estimated, CAMs of the tracked slices computed and fused, the epoch's metrics and preview maps).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .. import distributed
from ..events import CancelToken, EpochReport, Progress
from ..imaging.augment import augment_batch
from ..imaging.resize import upsample_maps
from ..infer.device import autocast
from ..models.classifier import STRIDE, build_classifier, recalibrate_batchnorm
from ..results.metrics import roc_auc
from ..train_step import TrainStep
from .cam import FusionBank, normalise_cams
from .config import Stage1Config
from .losses import balanced_bce

WARMUP_SHARE = 0.2           # of the one-cycle schedule's steps
BN_CALIBRATION_SLICES = 256   # labelled slices used after each epoch to re-estimate BatchNorm statistics


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
        with autocast(device):
            logits, cam = model.logits_and_cam(x)
        probs.append(torch.sigmoid(logits.float()).cpu().numpy())
        cams.append(normalise_cams(cam.float()).cpu().numpy())
    return np.concatenate(probs), np.concatenate(cams)


def augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips on both axes, a small affine transform and intensity jitter (imaging/augment.py): which side or
    end of the image a lesion is on, and how the image was windowed, must not be what the classifier learns.
    Image-level labels: y unchanged."""
    x, _ = augment_batch(x, None, rng)
    return x, y


class _Tracked:
    """Which slices train, which are tracked (their CAMs fused), and their targets."""

    def __init__(self, labels: list[str | None], track_idx: np.ndarray | None):
        self.labels = np.array([lab or "" for lab in labels])
        self.train_idx = np.flatnonzero((self.labels == "infected") | (self.labels == "clean"))
        self.target = (self.labels == "infected").astype(np.float32)
        track = np.flatnonzero(self.labels == "infected") if track_idx is None else track_idx
        self.track_idx = np.asarray(track, dtype=int)
        self.track_pos = {int(s): k for k, s in enumerate(self.track_idx)}
        self.eval_idx = np.union1d(self.train_idx, self.track_idx)


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
    t = _Tracked(labels, track_idx)
    ids = ids or [str(i) for i in range(len(images))]
    out_shape = out_shape or tuple(images.shape[1:])
    pos_fraction = float(t.target[t.train_idx].mean())

    torch.manual_seed(config.seed)
    np_rng = np.random.default_rng(config.seed)
    # augmentation's own stream: shuffling stays as it was (and, under torchrun, each rank's own)
    aug_rng = distributed.rank_rng(np.random.default_rng([config.seed, 1]), config.seed, 1)
    model = build_classifier({"width": config.width}).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    epochs = int(config.cls_epochs)
    global_batch = config.batch_size * distributed.size()      # each rank trains on config.batch_size of it
    steps_per_epoch = max(1, int(np.ceil(len(t.train_idx) / global_batch)))
    total_steps = epochs * steps_per_epoch
    # torch's OneCycleLR divides by zero when its warm-up is exactly one step (5 steps in all at 0.2): a budget
    # or a small data set lands there easily, so that one case warms up over a quarter instead
    pct_start = WARMUP_SHARE if abs(WARMUP_SHARE * total_steps - 1) > 1e-9 else 0.25
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total_steps,
                                                pct_start=pct_start)
    step = TrainStep(distributed.wrap(model, device), opt, device,
                     lambda logits, y: balanced_bce(logits, y, pos_fraction=pos_fraction),
                     augment=augment, scheduler=sched, what="classifier",
                     hint="Lower the learning rate, or check the images for corrupt values.")
    cam_shape = (int(np.ceil(images.shape[1] / STRIDE)), int(np.ceil(images.shape[2] / STRIDE)))
    bank = FusionBank(len(t.track_idx), cam_shape)
    history = []
    images_t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    target_t = torch.from_numpy(t.target)

    for epoch in range(1, epochs + 1):
        started = time.monotonic()
        model.train()
        loss = 0.0
        for done, loss in _train_epoch(step, images_t, target_t, np_rng.permutation(t.train_idx), aug_rng,
                                       global_batch, steps_per_epoch, epoch, cancel):
            yield Progress("classifier", (epoch - 1) * steps_per_epoch + done, epochs * steps_per_epoch,
                           f"epoch {epoch}/{epochs}")
        calib = np_rng.permutation(t.train_idx)[:BN_CALIBRATION_SLICES]
        recalibrate_batchnorm(model, (images_t[calib[s:s + config.batch_size]][:, None].to(device)
                                      for s in range(0, len(calib), config.batch_size)))
        metrics = _fuse_epoch(model, images, t, bank, device, cancel)
        maps = {}
        for i in preview_idx or []:
            k = t.track_pos.get(int(i))
            if k is not None:
                maps[ids[i]] = {"cam": upsample_maps(bank.last[k], out_shape),
                                "fused": upsample_maps(bank.fused(config.fusion, [k])[0], out_shape)}
        seconds = time.monotonic() - started
        losses = {"loss": distributed.mean_over_ranks(loss)}     # the ranks' shards are equal (shard's padding)
        history.append({"stage": "classifier", "epoch": epoch, **losses, **metrics, "seconds": round(seconds, 3)})
        yield EpochReport("classifier", epoch, epochs, losses=losses, metrics=metrics, maps=maps, seconds=seconds)
    return model, bank, history


def _train_epoch(step: TrainStep, images_t, target_t, order: np.ndarray, rng: np.random.Generator, batch_size: int,
                 steps: int, epoch: int, cancel: CancelToken):
    """Generator over one epoch's batches: yields (batches done, mean loss so far over the slices seen, this
    rank's). `batch_size` is the global batch: under torchrun each rank trains on its shard of it."""
    total_loss, n_seen = 0.0, 0
    for b in range(steps):
        cancel.raise_if_cancelled()
        batch = distributed.shard(order[b * batch_size:(b + 1) * batch_size])
        if len(batch) == 0:
            continue
        loss = step(images_t[batch][:, None], target_t[batch], rng=rng, where=f"at epoch {epoch}, batch {b + 1}")
        total_loss += loss * len(batch)
        n_seen += len(batch)
        yield b + 1, total_loss / max(n_seen, 1)


def _fuse_epoch(model, images: np.ndarray, t: _Tracked, bank: FusionBank, device, cancel) -> dict:
    """CAMs of this epoch fused into `bank` for the tracked slices the classifier calls infected; the epoch's
    metrics on the labelled slices."""
    probs = np.zeros(len(images), dtype=np.float32)
    # under torchrun each rank computes 1/N of the CAMs and all ranks get them all (each fuses the same bank)
    p_eval, cams_eval = distributed.gather_rows(
        len(t.eval_idx), lambda part: compute_cams(model, images[t.eval_idx[part]], device, cancel=cancel))
    probs[t.eval_idx] = p_eval
    eval_pos = {int(s): k for k, s in enumerate(t.eval_idx)}
    cams_track = cams_eval[[eval_pos[int(s)] for s in t.track_idx]] if len(t.track_idx) else cams_eval[:0]
    called = (probs[t.track_idx] >= 0.5) & (t.labels[t.track_idx] != "clean")
    bank.update(np.arange(len(t.track_idx)), cams_track, called)
    y_true = t.target[t.train_idx] > 0.5
    pred = probs[t.train_idx] >= 0.5
    return {"accuracy": float((pred == y_true).mean()), "auc": roc_auc(probs[t.train_idx], y_true),
            "sensitivity": float(pred[y_true].mean()) if y_true.any() else float("nan"),
            "specificity": float((~pred[~y_true]).mean()) if (~y_true).any() else float("nan"),
            "fused_slices": int(called.sum())}
