"""Train the label-free segmenter prior (covidseg_core/seg/prior.py) on synthetic lesions only.

Lesions are drawn (covidseg_core/synth) on the zenodo-dev slices labelled `clean` of the chosen volumes, inside
the lung fields the shipped lung model finds; no infection mask of any kind is read. The network and working size
are those of a budgeted CPU run (light segmenter, width 16, size 128), so `covidseg train` can start from it.

    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=268435456 \\
    .venv/bin/python scripts/train_synthetic_prior.py --out covidseg_core/resources/segmenter_prior.safetensors

Options: --volumes c01,...,c05 (default all ten), --steps, --batch-size, --seed, --size, --base.
"""
from __future__ import annotations

import argparse
import logging
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from covidseg_core.data import load_slice_set  # noqa: E402
from covidseg_core.imaging.lung_model import compute_lung_fields  # noqa: E402
from covidseg_core.imaging.resize import working_shape  # noqa: E402
from covidseg_core.models.segmenter import build_from_spec  # noqa: E402
from covidseg_core.seg.losses import tversky_focal_loss  # noqa: E402
from covidseg_core.seg.prior import save_prior  # noqa: E402
from covidseg_core.seg.training import WEIGHT_DECAY, augment, init_head_prior  # noqa: E402
from covidseg_core.synth.source import SyntheticSource  # noqa: E402
from covidseg_core.train_step import warmup_cosine  # noqa: E402

log = logging.getLogger("train_synthetic_prior")
DATA = REPO.parent / "shared" / "data" / "zenodo-dev"
STEPS_PER_DRAW = 25


def commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True,
                               text=True).stdout.strip()
        return out + ("+uncommitted-changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--volumes", default=None, help="comma list (default: every volume)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--base", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started_commit = commit()
    slices = load_slice_set(args.data)
    volumes = args.volumes.split(",") if args.volumes else sorted(set(slices.groups))
    clean = np.array([i for i in slices.indices("clean") if slices.groups[i] in volumes])
    lungs, warning = compute_lung_fields(slices.images[clean])
    if warning:
        raise SystemExit(warning)
    torch.manual_seed(args.seed)
    source = SyntheticSource(slices.images[clean], lungs, seed=args.seed,
                             work_shape=working_shape(*slices.images.shape[1:], args.size))
    log.info("%d clean slices of %s (%d without lung skipped)", len(source), ",".join(volumes), source.n_skipped)
    spec = {"name": "light", "in_ch": 1, "options": {"base": args.base}}
    model = build_from_spec(spec)
    init_head_prior(model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(args.steps))
    t0, losses, step = time.monotonic(), [], 0
    for draw in range(1, math.ceil(args.steps / STEPS_PER_DRAW) + 1):
        rng = np.random.default_rng([args.seed, draw])
        x_all, y_all = source.epoch_pairs(draw, STEPS_PER_DRAW * args.batch_size)
        for s in range(0, len(x_all), args.batch_size):
            if step >= args.steps:
                break
            x, y = augment(x_all[s:s + args.batch_size], y_all[s:s + args.batch_size], rng, None)
            loss = tversky_focal_loss(model(x).float(), y.long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
        log.info("step %d/%d loss %.4f (%.0f s)", step, args.steps, np.mean(losses[-STEPS_PER_DRAW:]),
                 time.monotonic() - t0)
    info = {"data": "zenodo-dev (Ma et al., Zenodo 10.5281/zenodo.3757476, CC BY 4.0): slices labelled clean only",
            "volumes": volumes, "clean_slices": len(source), "steps": args.steps, "batch_size": args.batch_size,
            "lr": args.lr, "seed": args.seed, "commit": started_commit, "seconds": round(time.monotonic() - t0),
            "command": " ".join(sys.argv)}
    save_prior(args.out, model.state_dict(), spec, args.size, info)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
