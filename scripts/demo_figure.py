"""Draw docs/demo_study.png: slices of the synthetic demo study next to real chest CT.

    python scripts/demo_figure.py [--out docs/demo_study.png] [--shared ../shared]

Demo columns (base, lesions low and mid, a clean mid slice, the apex) in the lung window (W1500/L-600), the
soft-tissue window (W400/L40), and the lung window with the ground truth outlined in red. The last column is real:
a chest CT from ct-samples/totalseg_ct (HU, same windows) and, in the last row, a COVID-19 slice of zenodo-dev with
its infection mask (8-bit CLAHE images there, not HU). Without the shared data the real column is left out.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from covidseg_core.atomic import atomic_write_bytes  # noqa: E402
from covidseg_core.demo import make_demo_volume  # noqa: E402
from covidseg_core.imaging.windowing import LUNG_WINDOW, MEDIASTINUM_WINDOW, apply_window  # noqa: E402

TILE = 128
ZOOM = 2
REAL_CT = "data/ct-samples/totalseg_ct/nifti/chest_cta_aorta_ct_cropped.nii.gz"
REAL_CT_SLICE = 96            # mid chest, at the hila
ZENODO = "data/zenodo-dev"


def _grey(a01: np.ndarray) -> np.ndarray:
    return np.stack([(np.clip(a01, 0, 1) * 255).round().astype(np.uint8)] * 3, -1)


def _outlined(a01: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rgb = _grey(a01)
    m = mask > 0
    rgb[m & ~ndimage.binary_erosion(m)] = (255, 40, 40)
    return rgb


def _fit(rgb: np.ndarray) -> np.ndarray:
    """Centre-crop or pad to TILE x TILE."""
    out = np.zeros((TILE, TILE, 3), np.uint8)
    h, w = rgb.shape[:2]
    y0, x0 = max((h - TILE) // 2, 0), max((w - TILE) // 2, 0)
    crop = rgb[y0:y0 + TILE, x0:x0 + TILE]
    oy, ox = (TILE - crop.shape[0]) // 2, (TILE - crop.shape[1]) // 2
    out[oy:oy + crop.shape[0], ox:ox + crop.shape[1]] = crop
    return out


def pick_slices(mask: np.ndarray) -> list[tuple[str, int]]:
    """(title, z) of the demo columns: a clean slice at the base, the largest lesion in the lower and in the middle
    third, a clean slice in the middle third, the apex."""
    n = len(mask)
    area = mask.reshape(n, -1).sum(axis=1)
    lower, middle = range(1, n // 3), range(n // 3, 2 * n // 3)
    base = min([z for z in lower if area[z] == 0] or [1], key=lambda z: abs(z - n // 10))
    low = max([z for z in lower if z != base] or [base], key=lambda z: area[z])
    mid = max(middle, key=lambda z: area[z])
    clean = [z for z in middle if area[z] == 0] or [z for z in range(n) if area[z] == 0] or [n // 2]
    return [("base, clean", base), ("lower, lesions", low), ("middle, lesions", mid),
            ("middle, clean", min(clean, key=lambda z: abs(z - n // 2))), ("apex", n - 1)]


def real_column(shared: Path) -> list[np.ndarray] | None:
    ct_path = shared / REAL_CT
    if not ct_path.is_file():
        return None
    from covidseg_core.io.nifti import read_nifti

    ct = read_nifti(ct_path).array[REAL_CT_SLICE].astype(np.float32)
    tiles = [_fit(_grey(apply_window(ct, *LUNG_WINDOW))), _fit(_grey(apply_window(ct, *MEDIASTINUM_WINDOW)))]
    zen = shared / ZENODO
    if (zen / "labels.csv").is_file():
        stem = _zenodo_example(zen)
        img = np.concatenate([np.asarray(Image.open(zen / "images" / f"{stem}_{s}.png")) for s in "LR"], 1)
        msk = np.concatenate([np.asarray(Image.open(zen / "masks" / f"{stem}_{s}.png")) for s in "LR"], 1)
        small = lambda a: np.asarray(Image.fromarray(a).resize((TILE, TILE), Image.BILINEAR))  # noqa: E731
        tiles.append(_outlined(small(img) / 255.0, small(msk) > 127))
    return tiles


def _zenodo_example(zen: Path) -> str:
    """A slice of c01 (a coronacases scan) with both lungs well in view and lesions over 5-20% of the lungs:
    of those, the one with the most lung."""
    with open(zen / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh)}
    best, best_lung = None, 0
    for name in sorted(rows):
        stem = name[:-6]
        if not (stem.startswith("c01") and name.endswith("_L.png") and f"{stem}_R.png" in rows):
            continue
        read = lambda d: np.concatenate([np.asarray(Image.open(zen / d / f"{stem}_{s}.png")) > 127  # noqa: E731
                                         for s in "LR"], 1)
        lung, lesion = read("lungs").sum(), read("masks").sum()
        if lung > best_lung and 0.05 < lesion / max(lung, 1) < 0.2:
            best, best_lung = stem, lung
    return best or sorted(rows)[0][:-6]


def draw(shared: Path) -> Image.Image:
    hu, mask, _ = make_demo_volume()
    cols = pick_slices(mask)
    grid = [[_grey(apply_window(hu[z], *LUNG_WINDOW)), _grey(apply_window(hu[z], *MEDIASTINUM_WINDOW)),
             _outlined(apply_window(hu[z], *LUNG_WINDOW), mask[z])] for _, z in cols]
    titles = [f"demo z={z}: {t}" for t, z in cols]
    real = real_column(shared)
    if real:
        grid.append(real)
        titles.append("real CT (last: zenodo COVID)")
    rows = max(len(c) for c in grid)
    head, gap = 16, 4
    w, h = len(grid) * (TILE * ZOOM + gap), head + rows * (TILE * ZOOM + gap)
    sheet = Image.new("RGB", (w, h), (255, 255, 255))
    pen = ImageDraw.Draw(sheet)
    for c, (col, title) in enumerate(zip(grid, titles)):
        x = c * (TILE * ZOOM + gap)
        pen.text((x + 2, 2), title, fill=(0, 0, 0))
        for r, tile in enumerate(col):
            sheet.paste(Image.fromarray(tile).resize((TILE * ZOOM, TILE * ZOOM), Image.NEAREST),
                        (x, head + r * (TILE * ZOOM + gap)))
    return sheet


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "demo_study.png"))
    ap.add_argument("--shared", default=str(ROOT / ".." / "shared"))
    args = ap.parse_args(argv)
    buf = io.BytesIO()
    draw(Path(args.shared)).save(buf, format="PNG", optimize=True)
    atomic_write_bytes(Path(args.out), buf.getvalue())
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
