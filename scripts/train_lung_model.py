"""Train the lung-field network (covidseg_core.imaging.lung_model) on zenodo-dev's expert lung masks.

zenodo-dev holds each 256x256 slice as two halves (c01_0000_L.png = image-left columns 0-127, _R = 128-255);
the whole slice is L and R side by side (checked at load time: the seam between L and R is smooth, the swapped
seam is not). The network is trained on whole slices, half slices and zoomed crops, with heavy intensity
augmentation so that it works on zenodo's min-max + CLAHE 8-bit images and on HU CT through the lung window
(lungs dark grey, air ~0.23, soft tissue ~0.9) alike.

    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=268435456 \\
    .venv/bin/python scripts/train_lung_model.py --out covidseg_core/resources/lung_field.safetensors

Options: --volumes c01,c02 (train on these only; default all), --epochs, --max-minutes (a cap), --seed.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from covidseg_core.atomic import atomic_write  # noqa: E402
from covidseg_core.imaging.lung_model import (DEFAULT_WIDTHS, DEFAULT_WORK_SIZE, LungNet, padded_shape,  # noqa: E402
                                      parameter_count, weights_digest)

log = logging.getLogger("train_lung_model")

DEFAULT_DATA = REPO.parent / "shared" / "data" / "zenodo-dev"
SAMPLES_PER_EPOCH = 1000      # ~ the number of whole slices in zenodo-dev
KIND_WEIGHTS = {"whole": 0.35, "half": 0.45, "crop": 0.2}
NEGATIVE_P = 0.06             # samples with no lung at all (flat images, lung-free crops)
INFECTION_WEIGHT = 1.0        # BCE weight of infected lung pixels against the rest


# --- data ---------------------------------------------------------------------------------------------------

@dataclass
class ZenodoSlices:
    """Whole 256x256 slices of zenodo-dev: image in [0, 1], lung and infection masks (bool)."""
    names: list[str]          # slice base names, e.g. c01_0000
    volumes: list[str]
    images: np.ndarray        # (n, 256, 256) float32
    lungs: np.ndarray         # (n, 256, 256) bool
    infection: np.ndarray     # (n, 256, 256) bool


def _read01(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(path)
    return img


def load_zenodo(data: Path = DEFAULT_DATA, volumes: list[str] | None = None) -> ZenodoSlices:
    """Assemble the half-slice PNGs of the chosen volumes into whole slices."""
    with open(data / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    bases: dict[str, str] = {}
    for row in rows:
        if volumes is None or row["volume"] in volumes:
            bases[row["file"][:-len("_L.png")]] = row["volume"]
    if not bases:
        raise SystemExit(f"no slices of volumes {volumes} in {data / 'labels.csv'}")
    names = sorted(bases)
    images, lungs, infection = [], [], []
    for name in names:
        def whole(sub: str) -> np.ndarray:
            return np.hstack([_read01(data / sub / f"{name}_L.png"), _read01(data / sub / f"{name}_R.png")])
        images.append(whole("images").astype(np.float32) / 255.0)
        lungs.append(whole("lungs") > 127)
        infection.append(whole("masks") > 127)
    out = ZenodoSlices(names, [bases[n] for n in names], np.stack(images), np.stack(lungs), np.stack(infection))
    check_halves_side_by_side(out.images)
    return out


def check_halves_side_by_side(images: np.ndarray) -> None:
    """L|R must be the slice: the seam inside it (L's last column against R's first) must be as smooth as two
    neighbouring columns of L, and far smoother than L's last column against R's last (R mirrored)."""
    seam = np.abs(images[:, :, 127] - images[:, :, 128]).mean()
    inner = np.abs(images[:, :, 126] - images[:, :, 127]).mean()
    mirrored = np.abs(images[:, :, 127] - images[:, :, 255]).mean()
    log.info("half-slice seam check: |L[127]-R[0]| %.3f, |L[126]-L[127]| %.3f, mirrored |L[127]-R[127]| %.3f",
             seam, inner, mirrored)
    if not (seam < 1.2 * inner + 0.01 and seam < 0.6 * mirrored):
        raise SystemExit("zenodo-dev halves do not assemble into whole slices as L|R; check the data layout")


# --- augmentation -------------------------------------------------------------------------------------------

def _affine(rng: np.random.Generator, src_hw, dst_hw, zoom_range, allow_rot=True) -> np.ndarray:
    """2x3 matrix mapping the source into the destination: fit the longer side (as inference does), then a
    random zoom, rotation, flips and shift about the centre."""
    sh, sw = src_hw
    dh, dw = dst_hw
    s = min(dh / sh, dw / sw) * math.exp(rng.uniform(*np.log(zoom_range)))
    theta = math.radians(rng.uniform(-15, 15)) if allow_rot and rng.random() < 0.7 else 0.0
    fx = -1.0 if rng.random() < 0.5 else 1.0
    fy = -1.0 if rng.random() < 0.5 else 1.0
    a = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]) * s
    a = a @ np.diag([fx, fy])
    shift = rng.uniform(-0.08, 0.08, 2) * np.array([dw, dh])
    c_src = np.array([(sw - 1) / 2, (sh - 1) / 2])
    c_dst = np.array([(dw - 1) / 2, (dh - 1) / 2]) + shift
    return np.hstack([a, (c_dst - a @ c_src)[:, None]]).astype(np.float32)


def _warp(rng, img, target, m, dst_hw):
    dh, dw = dst_hw
    mode = rng.choice(4)
    if mode == 0:
        border = dict(borderMode=cv2.BORDER_REPLICATE)
    elif mode == 1:
        border = dict(borderMode=cv2.BORDER_REFLECT)
    else:   # padding: black (zenodo), or the air/padding level of a windowed CT
        value = 0.0 if mode == 2 else float(rng.uniform(0.0, 0.3))
        border = dict(borderMode=cv2.BORDER_CONSTANT, borderValue=value)
    out_img = cv2.warpAffine(img, m, (dw, dh), flags=cv2.INTER_LINEAR, **border)
    out_target = cv2.warpAffine(target.astype(np.float32), m, (dw, dh), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return out_img, out_target


def _monotonic_curve(rng, x):
    knots = int(rng.integers(3, 8))
    xs = np.concatenate([[0.0], np.sort(rng.uniform(0, 1, knots - 2)), [1.0]])
    ys = np.concatenate([[0.0], np.cumsum(rng.dirichlet(np.ones(knots - 1) * 0.8))])
    lo, hi = rng.uniform(0.0, 0.3), rng.uniform(0.7, 1.0)
    return lo + (hi - lo) * np.interp(x, xs, ys)


def _hu_like(rng, x):
    """Zenodo's stretched 8-bit look -> a CT in the lung window: raised black (air ~0.2-0.3), lungs dark grey,
    soft tissue near white, flat (CLAHE texture smoothed away)."""
    if rng.random() < 0.7:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5))
    a, b = rng.uniform(0.0, 0.15), rng.uniform(0.3, 0.75)
    lo, hi = rng.uniform(0.1, 0.35), rng.uniform(0.85, 1.0)
    t = np.clip((x - a) / (b - a), 0, 1) ** rng.uniform(0.5, 1.5)
    return lo + (hi - lo) * t


def augment_intensity(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Window/level-like remaps, local contrast, noise and blur on an image in [0, 1]."""
    r = rng.random()
    if r < 0.3:
        x = np.clip(x * rng.uniform(0.75, 1.25) + rng.uniform(-0.1, 0.1), 0, 1) ** rng.uniform(0.6, 1.6)
    elif r < 0.65:
        x = _hu_like(rng, x)
    else:
        x = _monotonic_curve(rng, x)
    if rng.random() < 0.25:
        lo, hi = x.min(), x.max()
        x = (x - lo) / max(hi - lo, 1e-3)
    if rng.random() < 0.25:
        clahe = cv2.createCLAHE(clipLimit=rng.uniform(1.0, 4.0), tileGridSize=(8, 8))
        x = clahe.apply(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)).astype(np.float32) / 255.0
    if rng.random() < 0.2:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, 1.2))
    if rng.random() < 0.5:
        x = x + rng.normal(0, rng.uniform(0.0, 0.04), x.shape)
    return np.clip(x, 0, 1).astype(np.float32)


def _negative(rng, data: ZenodoSlices, hw) -> np.ndarray:
    """An image with no lung: a flat one (air, soft tissue) with noise, or a zoomed lung-free crop."""
    h, w = hw
    if rng.random() < 0.4:
        img = np.full((h, w), rng.uniform(0, 1), np.float32)
        img += cv2.GaussianBlur(rng.normal(0, rng.uniform(0, 0.08), (h, w)).astype(np.float32), (0, 0), 1.0)
        return np.clip(img, 0, 1)
    for _ in range(50):
        i = int(rng.integers(len(data.names)))
        size = int(rng.integers(32, 96))
        y, x = rng.integers(0, 256 - size, 2)
        if not data.lungs[i, y:y + size, x:x + size].any():
            crop = data.images[i, y:y + size, x:x + size]
            return augment_intensity(rng, cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR))
    return np.full((h, w), rng.uniform(0, 1), np.float32)


def make_batch(rng: np.random.Generator, data: ZenodoSlices, batch_size: int, work_size: int = DEFAULT_WORK_SIZE):
    """One batch of one kind (whole / half / crop), each sample edge-padded to the batch's padded shape exactly
    as inference pads. Returns (x, y, inf) float tensors (b, 1, h, w): y the soft lung target, inf the soft
    infection mask (where a missed lung pixel costs more, see seg_loss)."""
    kind = rng.choice(list(KIND_WEIGHTS), p=list(KIND_WEIGHTS.values()))
    xs, ys = [], []
    if kind == "half":
        content = (work_size, work_size // 2)
    else:   # a whole slice, or a crop or pad of one, at a random aspect (long side first or across)
        short = int(rng.integers(work_size * 3 // 4, work_size + 1))
        content = (work_size, short) if rng.random() < 0.5 else (short, work_size)
    ph, pw = padded_shape(*content)
    for _ in range(batch_size):
        hi_res = (content[0] * 2, content[1] * 2)     # augment at the data's resolution, then area-resize
        if rng.random() < NEGATIVE_P:
            img, target = _negative(rng, data, hi_res), np.zeros((*hi_res, 2), np.float32)
        else:
            i = int(rng.integers(len(data.names)))
            img, target = data.images[i], np.dstack([data.lungs[i], data.infection[i]]).astype(np.float32)
            if kind == "half":
                side = slice(0, 128) if rng.random() < 0.5 else slice(128, 256)
                img, target = img[:, side], target[:, side]
                zoom = (0.9, 1.1)
            else:
                zoom = (1.2, 2.0) if kind == "crop" else (0.7, 1.15)
            m = _affine(rng, img.shape, hi_res, zoom, allow_rot=True)
            img, target = _warp(rng, img, target, m, hi_res)
            img = augment_intensity(rng, img)
        img = cv2.resize(img, content[::-1], interpolation=cv2.INTER_AREA)
        target = cv2.resize(target, content[::-1], interpolation=cv2.INTER_AREA)
        pad = ((0, ph - content[0]), (0, pw - content[1]))
        xs.append(np.pad(img, pad, mode="edge"))
        ys.append(np.stack([np.pad(target[..., c], pad, mode="edge") for c in range(2)]))
    y = torch.from_numpy(np.stack(ys))
    return torch.from_numpy(np.stack(xs)).unsqueeze(1), y[:, :1], y[:, 1:]


# --- training -----------------------------------------------------------------------------------------------

def seg_loss(logits: torch.Tensor, target: torch.Tensor, infection: torch.Tensor | None = None,
             infection_weight: float = 1.0) -> torch.Tensor:
    """BCE + soft Dice over the whole batch (a batch-wide Dice stays defined for slices without lung). The BCE
    of infected lung pixels weighs `infection_weight` times the rest: the field's job is to keep the infection,
    and dense consolidation against the chest wall looks like the soft tissue outside the lung."""
    weight = None if infection is None or infection_weight == 1.0 else 1.0 + (infection_weight - 1.0) * infection
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight)
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return bce + dice


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return commit + ("+uncommitted-changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train(data: ZenodoSlices, epochs: float = 6, seed: int = 0, batch_size: int = 16,
          lr: float = 3e-3, max_minutes: float | None = None, widths=DEFAULT_WIDTHS,
          work_size: int = DEFAULT_WORK_SIZE, device: str | None = None,
          infection_weight: float = INFECTION_WEIGHT) -> tuple[LungNet, dict]:
    """Train a LungNet; returns it (eval mode, on the CPU) and a summary of the run."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = LungNet(widths, work_size).to(dev)
    steps = max(1, round(epochs * SAMPLES_PER_EPOCH / batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    t0 = time.time()
    running = None
    done = 0
    for step in range(steps):
        if max_minutes is not None and time.time() - t0 > 60 * max_minutes:
            log.warning("stopping at step %d of %d: --max-minutes %.1f reached", step, steps, max_minutes)
            break
        x, y, inf = make_batch(rng, data, batch_size, work_size)
        model.train()
        loss = seg_loss(model(x.to(dev)), y.to(dev), inf.to(dev), infection_weight)
        if not torch.isfinite(loss):
            raise SystemExit(f"loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        done = step + 1
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if done % 50 == 0 or done == steps:
            log.info("step %d/%d  loss %.4f  %.0fs", done, steps, running, time.time() - t0)
    model = model.cpu().eval()
    summary = {"steps": done, "planned_steps": steps, "batch_size": batch_size, "epochs": epochs,
               "samples_per_epoch": SAMPLES_PER_EPOCH, "lr": lr, "seed": seed, "final_loss": running,
               "infection_weight": infection_weight,
               "train_seconds": round(time.time() - t0, 1), "parameters": parameter_count(model),
               "volumes": sorted(set(data.volumes)), "slices": len(data.names)}
    return model, summary


def save_model(model: LungNet, path: Path, summary: dict, command: str, commit: str | None = None) -> Path:
    """Write the weights with the architecture options, a checksum and the provenance as metadata. `commit`:
    the code's commit when training started (default: now)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {**model.options(), "sha256": weights_digest(tensors), "training": json.dumps(summary),
                "command": command, "commit": commit or git_commit(),
                "data": "COVID-19 CT Lung and Infection Segmentation Dataset, Ma Jun et al., Zenodo "
                        "10.5281/zenodo.3757476, CC BY 4.0 (lung masks of zenodo-dev)"}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="zenodo-dev folder")
    ap.add_argument("--volumes", default="", help="comma-separated volumes to train on (default: all)")
    ap.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    ap.add_argument("--epochs", type=float, default=6, help=f"epochs of {SAMPLES_PER_EPOCH} samples")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop early after this long")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--infection-weight", type=float, default=INFECTION_WEIGHT,
                    help="BCE weight of infected lung pixels (a missed lesion costs more than a missed rim)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    volumes = [v.strip() for v in args.volumes.split(",") if v.strip()] or None
    commit = git_commit()     # the code as it is when training starts
    data = load_zenodo(args.data, volumes)
    log.info("%d whole slices from %s", len(data.names), ", ".join(sorted(set(data.volumes))))
    model, summary = train(data, args.epochs, args.seed, args.batch_size, args.lr, args.max_minutes,
                           infection_weight=args.infection_weight)
    command = "scripts/train_lung_model.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    save_model(model, args.out, summary, command, commit)
    log.info("wrote %s (%d parameters, %d steps, %.0fs)", args.out, summary["parameters"], summary["steps"],
             summary["train_seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
