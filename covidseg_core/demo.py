"""A small synthetic chest-CT study in HU, with slice labels and ground truth, to try everything without a download.

The scan is drawn by `phantom/` (a chest from the liver dome to the lung apices: chest wall, ribs, spine,
mediastinum, lungs with vessels and bronchi, scanner blur and noise) with COVID-19 ground-glass opacities and
consolidations on some of its slices. Written as a NIfTI volume (plus labels CSV keyed by slice index) and as an
image folder (lung-window PNGs, labels.csv, masks/).
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_write, atomic_write_bytes
from .imaging.windowing import LUNG_WINDOW, apply_window
from .phantom import chest_ct

log = logging.getLogger(__name__)

DEMO_SPACING = (1.4, 1.4, 5.0)     # (x, y, z) mm: a 128-pixel slice covers a 180 mm field, like a small FOV
DEMO_ORIGIN = (-89.6, -89.6, -80.0)


def make_demo_volume(seed: int = 0, n_slices: int = 32, size: int = 128):
    """Return (hu (z,y,x) float32, infection mask (z,y,x) uint8, labels list of "infected"/"clean").

    Slice 0 is the lowest (the liver dome), the last one the lung apices. A slice is `infected` exactly when its
    mask shows a lesion (pieces too small to see are left out of both the image and the mask)."""
    hu, mask = chest_ct(seed, n_slices, size)
    labels = ["infected" if mask[z].any() else "clean" for z in range(n_slices)]
    return hu, mask, labels


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "label", "volume"])
            w.writerows([(f, lab, "demo") for f, lab in rows])
    atomic_write(path, write)


def write_demo(out: str | Path, seed: int = 0, n_slices: int = 32, size: int = 128) -> dict:
    """Write the demo study to `out`: volume/ (NIfTI + labels.csv + ground truth) and images/ + labels.csv + masks/."""
    import SimpleITK as sitk

    out = Path(out)
    hu, mask, labels = make_demo_volume(seed, n_slices, size)
    vol_dir = out / "volume"
    vol_dir.mkdir(parents=True, exist_ok=True)
    for name, arr in (("ct.nii.gz", hu.astype(np.int16)), ("infection.nii.gz", mask)):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(DEMO_SPACING)
        img.SetOrigin(DEMO_ORIGIN)
        atomic_write(vol_dir / name, lambda tmp, img=img: sitk.WriteImage(img, str(tmp), True, imageIO="NiftiImageIO"))
    _write_csv(vol_dir / "labels.csv", [(str(z), lab) for z, lab in enumerate(labels)])

    (out / "images").mkdir(exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    png = (apply_window(hu, *LUNG_WINDOW) * 255).round().astype(np.uint8)
    names = [f"demo_{z:03d}.png" for z in range(n_slices)]
    for z, name in enumerate(names):
        atomic_write_bytes(out / "images" / name, _png_bytes(png[z]))
        atomic_write_bytes(out / "masks" / name, _png_bytes((mask[z] * 255).astype(np.uint8)))
    _write_csv(out / "labels.csv", list(zip(names, labels)))
    n_inf = labels.count("infected")
    log.info("demo study written to %s: %d slices, %d infected, %d clean", out, n_slices, n_inf, n_slices - n_inf)
    return {"out": str(out), "volume": str(vol_dir / "ct.nii.gz"), "images": str(out),
            "slices": n_slices, "infected": n_inf, "clean": n_slices - n_inf}
