"""A small synthetic chest-CT study in HU, with slice labels and ground truth, to try everything without a download.

Body with fat and muscle, a spine, two lungs with vessels, and on a run of slices ground-glass opacities and
consolidations inside the lungs. Written as a NIfTI volume (plus labels CSV keyed by slice index) and as an image
folder (lung-window PNGs, labels.csv, masks/).
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from .atomic import atomic_write, atomic_write_bytes
from .imaging.windowing import LUNG_WINDOW, apply_window

log = logging.getLogger(__name__)

DEMO_SPACING = (1.4, 1.4, 5.0)     # (x, y, z) mm: a 128-pixel slice covers a 180 mm field, like a small FOV
DEMO_ORIGIN = (-89.6, -89.6, -80.0)


def _ellipse(shape, cy, cx, ry, rx, angle=0.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    y, x = yy - cy, xx - cx
    return ((x * c + y * s) / rx) ** 2 + ((-x * s + y * c) / ry) ** 2 <= 1.0


def make_demo_volume(seed: int = 0, n_slices: int = 32, size: int = 128):
    """Return (hu (z,y,x) float32, infection mask (z,y,x) uint8, labels list of "infected"/"clean")."""
    rng = np.random.default_rng(seed)
    shape = (size, size)
    hu = np.full((n_slices, size, size), -1000.0, dtype=np.float32)
    mask = np.zeros((n_slices, size, size), dtype=np.uint8)
    s = size / 128.0
    # lesion centres follow smooth paths through a run of slices (as real opacities do)
    lesions = []
    infected_run = range(int(n_slices * 0.25), int(n_slices * 0.75))
    for _ in range(5):
        side = rng.choice([-1, 1])
        lesions.append({
            "z0": rng.integers(infected_run.start, max(infected_run.stop - 3, infected_run.start + 1)),
            "len": rng.integers(3, 9),
            "cy": 64 * s + rng.uniform(-22, 22) * s, "cx": 64 * s + side * rng.uniform(22, 34) * s,
            "r": rng.uniform(4.5, 9.0) * s, "hu": rng.choice([-450.0, -350.0, 10.0]),
        })
    vessels = [(rng.uniform(40, 88) * s, 64 * s + rng.choice([-1, 1]) * rng.uniform(16, 40) * s)
               for _ in range(14)]
    for z in range(n_slices):
        t = z / max(n_slices - 1, 1)
        # lungs grow then shrink along z, always leaving a chest wall of >= 8 pixels (at size 128) as real CT does
        lung_scale = 0.72 + 0.26 * np.sin(np.pi * (0.15 + 0.7 * t))
        body = _ellipse(shape, 64 * s, 64 * s, 50 * s, 60 * s)
        fat = body & ~_ellipse(shape, 64 * s, 64 * s, 45 * s, 55 * s)
        sl = np.where(body, 45.0, -1000.0).astype(np.float32)
        sl[fat] = -100.0
        lungs = np.zeros(shape, bool)
        for side in (-1, 1):
            lungs |= _ellipse(shape, 60 * s, 64 * s + side * 27 * s, 34 * s * lung_scale, 18 * s * lung_scale,
                              angle=side * 0.12)
        sl[lungs] = -860.0
        for vy, vx in vessels:                              # vessels: small bright dots inside the lungs
            v = _ellipse(shape, vy + 3 * np.sin(z / 3.0), vx, 1.6 * s, 1.6 * s) & lungs
            sl[v] = 30.0
        sl[_ellipse(shape, 106 * s, 64 * s, 8 * s, 9 * s)] = 650.0   # vertebral body
        sl[_ellipse(shape, 64 * s, 64 * s, 9 * s, 7 * s)] = 40.0     # mediastinum / heart between the lungs
        les = np.zeros(shape, bool)
        for L in lesions:
            dz = z - L["z0"]
            if 0 <= dz < L["len"]:
                r = L["r"] * np.sin(np.pi * (dz + 0.5) / L["len"]) + 1.0
                blob = _ellipse(shape, L["cy"], L["cx"], r, r * 1.3, angle=float(L["cy"])) & lungs
                sl[blob] = np.maximum(sl[blob], L["hu"])
                les |= blob
        sl += rng.normal(0, 18, shape).astype(np.float32)
        hu[z] = ndimage.gaussian_filter(sl, 0.6)
        mask[z] = les
    labels = ["infected" if mask[z].sum() >= 10 else "clean" for z in range(n_slices)]
    # tiny lesions would be labelled clean: keep the ground truth consistent with the labels
    for z, lab in enumerate(labels):
        if lab == "clean":
            mask[z] = 0
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
