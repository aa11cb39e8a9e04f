"""Stage 2: training (or resuming) the segmenter on per-slice targets, checkpointing every epoch into the run.

Every epoch draws its shuffling, crops, augmentation and dropout from (seed, epoch), so a resumed run trains
exactly like an uninterrupted one. The optimisation step itself is the shared train_step.TrainStep.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from .. import distributed
from ..constants import IGNORE
from ..errors import TrainingError
from ..events import CancelToken, EpochReport, Message, Progress
from ..imaging.augment import augment_batch
from ..imaging.resize import resize_stack, stack_to_torch, working_shape
from ..infer.device import autocast
from ..models.segmenter import build_from_spec
from ..runs import BEST, LAST, RunFolder
from ..synth.workers import PairWorkers, auto_workers
from ..train_step import TrainStep, warmup_cosine
from .losses import tversky_focal_loss
from .prior import blend_with_start


class SegmenterOptions(Protocol):
    """What the loop reads of its configuration (train_config.TrainConfig has it all)."""
    seed: int
    seg_epochs: int
    batch_size: int
    lr: float
    crop: int | None
    steps_per_epoch: int | None
    prior_share: float
    data_workers: int | None

    def model_spec(self) -> dict: ...


class PairSource(Protocol):
    """Training pairs made on the fly (synth.source.SyntheticSource): new ones every epoch, each from (seed,
    epoch, its index), so any subset can be drawn by any process (synth/workers.py)."""
    def __len__(self) -> int: ...

    def native_pairs(self, epoch: int, indices) -> list: ...

    def to_work(self, pairs: list) -> tuple[torch.Tensor, torch.Tensor]: ...

    def epoch_pairs(self, epoch: int, n: int) -> tuple[torch.Tensor, torch.Tensor]: ...


VALIDATION_KEY = 0       # the epoch key of the fixed synthetic validation pairs (training epochs count from 1)


@dataclass
class SegmenterData:
    images: torch.Tensor        # (n, 1, h, w) float32 at the working size
    targets: torch.Tensor       # (n, h, w) uint8 0/1/255 at the working size
    train_idx: np.ndarray
    val_idx: np.ndarray
    synthetic: PairSource | None = None    # synthetic pairs mixed into every epoch
    synthetic_share: float = 0.0           # of each epoch's samples
    n_val_synthetic: int = 0               # fixed synthetic pairs added to the validation set

    @property
    def epoch_size(self) -> int:
        """Samples in one pass: every training slice once, plus the synthetic pairs that go with them."""
        n_real = len(self.train_idx)
        if self.synthetic is None or self.synthetic_share <= 0:
            return n_real
        return n_real + int(round(max(n_real, 1) * self.synthetic_share / (1 - self.synthetic_share)))

    def epoch_batches(self, epoch: int, rng: np.random.Generator, n_samples: int, batch_size: int,
                      workers: PairWorkers | None = None, ahead: int = 2):
        """This rank's (x, y) of each global batch of one epoch: `n_samples` drawn from the shuffled training
        slices and fresh synthetic pairs in their share, shuffled together, each global batch split between the
        ranks by distributed.shard. Only this rank's synthetic pairs are drawn, by `workers` (when given)
        `ahead` batches before they are needed, so the drawing overlaps the training steps."""
        n_syn = 0 if self.synthetic is None else int(round(n_samples * self.synthetic_share))
        n_syn = n_samples if len(self.train_idx) == 0 else n_syn
        real = self.train_idx[rng.permutation(len(self.train_idx))][: n_samples - n_syn]
        order = rng.permutation(len(real) + n_syn)         # items past len(real) are synthetic pair numbers
        batches = [distributed.shard(order[s:s + batch_size]) for s in range(0, len(order), batch_size)]
        draw = workers or (PairWorkers(self.synthetic, 0) if n_syn else None)
        pending: dict[int, object] = {}

        def start(b: int) -> None:
            syn = batches[b][batches[b] >= len(real)] - len(real)
            if len(syn):
                pending[b] = draw.submit(epoch, syn)

        for b in range(min(ahead, len(batches))):
            start(b)
        for b, items in enumerate(batches):
            if b + ahead < len(batches):
                start(b + ahead)
            syn_mask = items >= len(real)
            is_syn = torch.from_numpy(syn_mask)
            x = torch.empty((len(items), *self.images.shape[1:]), dtype=self.images.dtype)
            y = torch.empty((len(items), *self.targets.shape[1:]), dtype=self.targets.dtype)
            mine = torch.from_numpy(real[items[~syn_mask]])
            x[~is_syn], y[~is_syn] = self.images[mine], self.targets[mine]
            if b in pending:
                x[is_syn], y[is_syn] = draw.collect(pending.pop(b))
            yield x, y

    def validation_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Held-out slices with their targets, plus fixed synthetic pairs when synthetic pairs train."""
        x, y = self.images[self.val_idx], self.targets[self.val_idx]
        if self.synthetic is not None and self.n_val_synthetic:
            xs, ys = self.synthetic.epoch_pairs(VALIDATION_KEY, self.n_val_synthetic)
            x, y = torch.cat([x, xs]), torch.cat([y, ys])
        return x, y


def prepare_segmenter_data(images01: np.ndarray, targets: np.ndarray, train_idx, val_idx,
                           size: int | None, synthetic: PairSource | None = None, synthetic_share: float = 0.0,
                           n_val_synthetic: int = 0) -> SegmenterData:
    n, h, w = images01.shape
    work = working_shape(h, w, size)
    x = stack_to_torch(images01, work)
    t = resize_stack(torch.from_numpy(targets)[:, None].float(), work, mode="nearest")[:, 0].to(torch.uint8)
    return SegmenterData(images=x.contiguous(), targets=t.contiguous(), train_idx=np.asarray(train_idx, int),
                         val_idx=np.asarray(val_idx, int), synthetic=synthetic,
                         synthetic_share=synthetic_share if synthetic is not None else 0.0,
                         n_val_synthetic=n_val_synthetic if synthetic is not None else 0)


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """Everything random in an epoch follows (seed, epoch), so a resumed run trains like an uninterrupted one:
    dropout inside the network (torch's global seed) and shuffling, crops and augmentation (the returned rng)."""
    torch.manual_seed(seed * 100003 + epoch)
    return np.random.default_rng([seed, epoch])


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


def evaluate_loss(model, images: torch.Tensor, targets: torch.Tensor, device, batch_size: int,
                  cancel: CancelToken | None = None) -> tuple[float, float]:
    """Mean loss and Dice (against the given targets, ignore pixels excluded) in eval mode."""
    model.eval()
    total, weight = 0.0, 0
    tp = fp = fn = 0
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            x = images[s:s + batch_size].to(device)
            y = targets[s:s + batch_size].to(device)
            with autocast(device):
                logits = model(x)
            total += float(tversky_focal_loss(logits.float(), y.long())) * len(x)
            weight += len(x)
            a, c, d = _batch_dice(logits.float(), y)
            tp, fp, fn = tp + a, fp + c, fn + d
    model.train()
    denom = 2 * tp + fp + fn
    return total / max(weight, 1), (2 * tp / denom if denom else 1.0)


PRIOR_FOREGROUND = 0.05
WEIGHT_DECAY = 1e-4


def init_head_prior(model: torch.nn.Module, prior: float = PRIOR_FOREGROUND) -> None:
    """Start the logit head at a small foreground probability (the prior trick of the focal-loss paper): a head
    that starts at p=0.5 everywhere spends its first epochs learning that infection is rare."""
    head = getattr(model, "head", None)
    if isinstance(head, torch.nn.Conv2d) and head.out_channels == 1 and head.bias is not None:
        with torch.no_grad():
            head.bias.fill_(float(np.log(prior / (1 - prior))))


def augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, crop: int | None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch's augmentation: random (foreground-biased) crops, then flips, a small affine transform
    and intensity jitter (imaging/augment.py)."""
    return augment_batch(*_random_crop(x, y, crop, rng), rng)


def train_segmenter(data: SegmenterData, cfg: SegmenterOptions, run: RunFolder, device: torch.device,
                    cancel: CancelToken | None = None, init_state: dict | None = None):
    """Generator: trains (or resumes) the segmenter, checkpointing every epoch; returns a summary dict.

    AdamW, its learning rate a linear warm-up then cosine decay over all the run's steps (seg_epochs x steps per
    epoch, train_step.warmup_cosine), stepped per batch; a resumed run sets the schedule to the steps done.
    `init_state`: weights to start from instead of random ones (the label-free prior, seg/prior.py); the best
    checkpoint (what predict uses) then keeps `cfg.prior_share` of them (prior.blend_with_start), the last one
    (what a resumed run continues from) the fine-tuned weights alone."""
    cancel = cancel or CancelToken()
    train_idx, val_idx = data.train_idx, data.val_idx
    if data.epoch_size == 0:
        raise TrainingError("No slice has a training mask (pseudo mask or pixel label).",
                            "Label some slices infected or clean, then train again.")
    bs = max(1, min(cfg.batch_size, data.epoch_size))
    global_bs = bs * distributed.size()      # under torchrun each rank trains on bs of each global batch
    n_batches = (data.epoch_size + global_bs - 1) // global_bs
    if cfg.steps_per_epoch:
        n_batches = min(n_batches, cfg.steps_per_epoch)
    total_steps = cfg.seg_epochs * n_batches
    torch.manual_seed(cfg.seed)
    model = build_from_spec(cfg.model_spec())
    init_head_prior(model)
    if init_state is not None:       # a starting point (seg/prior.py); a resumed run loads its checkpoint over it
        model.load_state_dict(init_state)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps))
    step = TrainStep(distributed.wrap(model, device), optimizer, device,
                     lambda logits, y: tversky_focal_loss(logits, y.long()),
                     augment=lambda x, y, rng: augment(x, y, rng, cfg.crop), scheduler=scheduler, what="segmenter",
                     hint="Lower the learning rate or check the images, then train again into a new folder.")
    start_epoch, best_val, best_epoch = _resume(run, model, optimizer, step)
    scheduler.last_epoch = (start_epoch - 1) * n_batches      # the schedule continues where the run stopped
    if start_epoch > 1 and start_epoch <= cfg.seg_epochs:
        yield Message(f"resuming the segmenter from epoch {start_epoch - 1} of {cfg.seg_epochs}")
    if init_state is not None and cfg.prior_share:
        yield Message(f"the trained segmenter keeps {cfg.prior_share:.0%} of the prior's weights (--prior-share)")
    val_x, val_y = data.validation_set()
    val_has_fg = bool(len(val_y)) and bool((val_y == 1).any())
    if len(val_y) and not val_has_fg and start_epoch == 1:
        yield Message("no validation slice has infection in its training mask: the best checkpoint is chosen "
                      "by training loss", "warning")
    model.train()
    started, first_step = time.monotonic(), (start_epoch - 1) * n_batches
    with _pair_workers(data, cfg, device) as workers:      # drawing ahead while the steps train
        for epoch in range(start_epoch, cfg.seg_epochs + 1):
            t0 = time.monotonic()
            rng = _epoch_rng(cfg.seed, epoch)
            aug_rng = distributed.rank_rng(rng, cfg.seed, epoch)
            running, seen = 0.0, 0
            n_samples = min(data.epoch_size, n_batches * global_bs)
            for bi, (x, y) in enumerate(data.epoch_batches(epoch, rng, n_samples, global_bs, workers)):  # rank's share
                cancel.raise_if_cancelled()
                running += step(x, y, rng=aug_rng, where=f"at epoch {epoch}") * len(x)
                seen += len(x)
                done = (epoch - 1) * n_batches + bi + 1
                rate = (time.monotonic() - started) / (done - first_step)
                yield Progress("segmenter", done, total_steps, f"epoch {epoch}/{cfg.seg_epochs}",
                               eta_s=rate * (total_steps - done))
            train_loss = distributed.mean_over_ranks(running / max(seen, 1), seen)     # every rank's slices
            if val_has_fg:
                val_loss, val_dice = evaluate_loss(model, val_x, val_y, device, bs * 2, cancel)
            else:   # too few slices held out, or none with a lesion to find: choose by training loss
                val_loss, val_dice = train_loss, float("nan")
            if val_loss < best_val:
                best_val, best_epoch = val_loss, epoch
            _checkpoint(run, cfg, model, optimizer, step, epoch, val_loss, best_val, best_epoch, init_state)
            seconds = time.monotonic() - t0
            run.append_epoch({"stage": "segmenter", "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                              "val_dice_vs_targets": val_dice, "best_epoch": best_epoch,
                              "seconds": round(seconds, 3)})
            yield EpochReport("segmenter", epoch, cfg.seg_epochs, losses={"train": train_loss, "val": val_loss},
                              metrics={"val_dice_vs_targets": val_dice}, seconds=seconds)
    return {"epochs": cfg.seg_epochs, "steps_per_epoch": n_batches, "best_epoch": best_epoch,
            "best_val_loss": best_val, "n_train": int(len(train_idx)), "n_val": int(len(val_idx))}


def _pair_workers(data: SegmenterData, cfg: SegmenterOptions, device: torch.device):
    """The worker processes that draw the synthetic pairs (cfg.data_workers, None: synth.workers.auto_workers),
    or none when nothing synthetic trains."""
    if data.synthetic is None or data.synthetic_share <= 0:
        return contextlib.nullcontext(None)
    n = cfg.data_workers
    if n is None:
        n = auto_workers(getattr(device, "type", str(device)), distributed.env_world().local_size)
    return PairWorkers(data.synthetic, n)


def _resume(run: RunFolder, model, optimizer, step: TrainStep) -> tuple[int, float, int]:
    """(first epoch to train, best validation loss so far, its epoch): from RUN's last checkpoint if any."""
    if not run.checkpoint_path(LAST).is_file():
        return 1, float("inf"), 0
    state = run.load_checkpoint(LAST)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    step.load_state_dict(state.get("scaler"))
    start_epoch = int(state["epoch"]) + 1
    run.drop_epochs_after("segmenter", start_epoch - 1)
    return start_epoch, float(state["best_val"]), int(state["best_epoch"])


def _checkpoint(run: RunFolder, cfg: SegmenterOptions, model, optimizer, step: TrainStep, epoch: int,
                val_loss: float, best_val: float, best_epoch: int, start: dict | None = None) -> None:
    spec = cfg.model_spec()
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if best_epoch == epoch:    # best first: if we die between the two writes, resuming redoes this epoch identically
        share = cfg.prior_share if start is not None else 0.0
        best = blend_with_start(weights, start, share) if share else weights
        run.save_checkpoint({"model": best, "epoch": epoch, "val_loss": val_loss, "spec": spec,
                             "prior_share": share}, BEST)
    last = {"model": weights, "optimizer": optimizer.state_dict(), "epoch": epoch, "best_val": best_val,
            "best_epoch": best_epoch, "spec": spec}
    if step.scales_gradients:
        last["scaler"] = step.state_dict()
    run.save_checkpoint(last, LAST)
