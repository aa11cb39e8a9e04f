"""`covidseg synth`: synthetic lesions on a data set's clean slices, written where a user can look at them.

An image folder gives an image folder (images/, masks/ 0/255, labels.csv with the clean slice each image was
drawn on); a volume (DICOM folder, NIfTI file) gives `synthetic.nii.gz` in HU, `synthetic_mask.nii.gz` and
labels.csv keyed by slice index, in the source's voxel geometry, so any viewer shows them side by side. Lesions
are drawn in the data's own units: HU for volumes, 8-bit gray values (through the [0, 1] scale the networks
see) for image folders. Nothing is written into the data set: the output folder must be new or empty.
"""
from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_write, atomic_write_text
from ..errors import InputError, LabelError
from ..events import CancelToken, Done, Message, Progress
from ..imaging.lung_model import compute_lung_fields
from .lesions import synthesize

MAX_IMAGES = 10000


def check_request(data: Path, out: Path, n: int, seed: int) -> None:
    """Out-of-range options and an output that would touch the data set: InputError (exit 2)."""
    if not 1 <= n <= MAX_IMAGES:
        raise InputError(f"-n {n} is out of range.", f"Ask for 1 to {MAX_IMAGES} synthetic images.")
    if seed < 0:
        raise InputError(f"--seed {seed} is out of range.", "Use a seed of 0 or more.")
    src, dst = data.resolve(), out.resolve()
    if dst == src or src in dst.parents or (src.is_dir() and dst in src.parents) or (src.is_file() and dst == src.parent):
        raise InputError(f"--out {out} lies in or around the data set {data}: nothing may be written there.",
                         "Choose an output folder outside the data set.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {out} exists and is not an empty folder.", "Choose a new folder.")


def synth_job(data: str | Path, out: str | Path, n: int = 32, seed: int = 0, labels_csv=None,
              lung_method: str = "model", cancel: CancelToken | None = None):
    """Generator job: yields Progress / Message, ends with Done(summary)."""
    from ..data import load_slice_set

    data, out = Path(data), Path(out)
    cancel = cancel or CancelToken()
    check_request(data, out, n, seed)
    slices = load_slice_set(data, labels_csv)
    clean = slices.indices("clean")
    if len(clean) == 0:
        raise LabelError(f"No slice of {data} is labelled clean.",
                         "Synthetic lesions are drawn on normal lung: label some slices 'clean' first.")
    yield Message(f"finding the lung fields of {len(clean)} clean slices")
    lungs, warning = compute_lung_fields(slices.images[clean], lung_method)
    if warning:
        yield Message(warning, "warning")
    usable = clean[lungs.reshape(len(clean), -1).sum(1) >= 100]
    if len(usable) == 0:
        raise InputError(f"None of the {len(clean)} clean slices of {data} shows enough lung.",
                         "Label clean slices from the middle of the chest.")
    lung_of = dict(zip(clean.tolist(), lungs))
    study = slices.study
    hu = study is not None and study.is_hu and study.kind != "images"
    rng = np.random.default_rng(seed)
    images, masks, sources = [], [], []
    for k in range(n):
        if k % 16 == 0:
            cancel.raise_if_cancelled()
            yield Progress("synth", k, n)
        i = int(usable[rng.integers(len(usable))])
        base = study.array[i] if hu else slices.images[i]
        img, mask = synthesize(base, lung_of[i], rng, value_range=None if hu else (0.0, 1.0))
        images.append(img), masks.append(mask), sources.append(slices.ids[i])
    yield Progress("synth", n, n)
    out.mkdir(parents=True, exist_ok=True)
    if hu:
        files = _write_volume(out, study, np.stack(images), np.stack(masks))
    else:
        files = _write_images(out, images, masks)
    _write_labels(out / "labels.csv", files, sources)
    summary = {"out": str(out), "images": n, "clean_slices_used": int(len(np.unique(sources))),
               "units": "HU" if hu else "8-bit", "seed": seed, "lesion_pixels": int(sum(m.sum() for m in masks))}
    yield Done(summary)


def _write_images(out: Path, images, masks) -> list[str]:
    from PIL import Image

    (out / "images").mkdir(exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    names = []
    for k, (img, mask) in enumerate(zip(images, masks)):
        name = f"synthetic_{k:04d}.png"
        gray = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
        atomic_write(out / "images" / name, lambda tmp, a=gray: Image.fromarray(a).save(tmp, format="PNG"))
        atomic_write(out / "masks" / name, lambda tmp, a=mask: Image.fromarray(a.astype(np.uint8) * 255)
                     .save(tmp, format="PNG"))
        names.append(name)
    return names


def _write_volume(out: Path, study, images_hu: np.ndarray, masks: np.ndarray) -> list[str]:
    from ..io.nifti import write_volume

    ids = [str(k) for k in range(len(images_hu))]
    stack = replace(study, array=images_hu.astype(np.float32), slice_ids=ids, warnings=[], meta={})
    write_volume(np.round(images_hu).astype(np.int16), stack, out / "synthetic.nii.gz")
    write_volume(masks.astype(np.uint8), stack, out / "synthetic_mask.nii.gz")
    return ids


def _write_labels(path: Path, files: list[str], sources: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "label", "drawn_on"])
    writer.writerows([f, "infected", s] for f, s in zip(files, sources))
    atomic_write_text(path, buf.getvalue())
