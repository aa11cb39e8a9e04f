"""docs/synthetic_lesions.png: synthetic lesions drawn on clean zenodo-dev slices (what `train --synthetic`
trains on) next to real COVID-19 lesions of the same data set, each with its mask outlined.

    .venv/bin/python scripts/synth_figure.py [--data ../shared/data/zenodo-dev] [--out docs/synthetic_lesions.png]
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from covidseg_core.data import load_slice_set  # noqa: E402
from covidseg_core.imaging.lung_model import compute_lung_fields  # noqa: E402
from covidseg_core.synth.lesions import synthesize  # noqa: E402

log = logging.getLogger("synth_figure")


def outlined(gray01: np.ndarray, mask: np.ndarray, colour=(255, 60, 60)) -> np.ndarray:
    rgb = np.repeat(np.round(np.clip(gray01, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    edge = mask & ~np.pad(mask, 1)[2:, 1:-1] | mask & ~np.pad(mask, 1)[:-2, 1:-1] \
        | mask & ~np.pad(mask, 1)[1:-1, 2:] | mask & ~np.pad(mask, 1)[1:-1, :-2]
    rgb[edge] = colour
    return rgb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "zenodo-dev")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "synthetic_lesions.png")
    p.add_argument("--n", type=int, default=6, help="columns")
    p.add_argument("--seed", type=int, default=4)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if not args.data.is_dir():
        log.error("zenodo-dev not found at %s", args.data)
        return 2
    slices = load_slice_set(args.data)
    rng = np.random.default_rng(args.seed)
    clean = rng.choice(slices.indices("clean"), args.n, replace=False)
    infected = [i for i in slices.indices("infected") if slices.gt_masks[i].mean() > 0.02]
    real = rng.choice(infected, args.n, replace=False)
    lungs, _ = compute_lung_fields(slices.images[clean])
    top, middle, bottom = [], [], []
    for i, lung in zip(clean, lungs):
        img, mask = synthesize(slices.images[i], lung, rng)
        top.append(np.repeat(np.round(img * 255).astype(np.uint8)[..., None], 3, axis=2))
        middle.append(outlined(img, mask))
    for i in real:
        bottom.append(outlined(slices.images[i], slices.gt_masks[i] > 0, colour=(60, 200, 255)))
    rows = [np.concatenate(r, axis=1) for r in (top, middle, bottom)]
    gap = np.full((18, rows[0].shape[1], 3), 255, np.uint8)
    canvas = Image.fromarray(np.concatenate([gap, rows[0], gap, rows[1], gap, rows[2]], axis=0))
    draw = ImageDraw.Draw(canvas)
    h = rows[0].shape[0] + 18
    for k, text in enumerate(("synthetic lesions on clean slices (what the segmenter sees)",
                              "the same, with the exact synthetic mask",
                              "real COVID-19 lesions (zenodo-dev ground truth)")):
        draw.text((4, 3 + k * h), text, fill=(0, 0, 0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
