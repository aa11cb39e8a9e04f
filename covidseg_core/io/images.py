"""Folders of 2D PNG/JPG slices (8- or 16-bit) -> Study, with an optional labels CSV (`file,label[,...]`)."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..constants import LABELS
from ..errors import InputError, LabelError
from ..study import Study

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def image_dir(folder: Path) -> Path:
    """The folder that holds the images: `folder/images` when present (data-set layout), else `folder`."""
    sub = folder / "images"
    return sub if sub.is_dir() else folder


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_gray(path: Path, warnings: list[str] | None = None) -> np.ndarray:
    """One image as a 2D array (uint8 or uint16); colour images are converted to gray with a warning."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.int64)
                return np.clip(arr, 0, 65535).astype(np.uint16)
            if im.mode not in ("L", "1", "P") and warnings is not None:
                warnings.append(f"{path.name}: colour image ({im.mode}) converted to gray.")
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"Cannot read image {path}: {exc}.",
                         "Replace or remove the file; only PNG/JPG/TIFF slices are supported.") from exc


def read_labels_csv(csv_path: Path, known_files: list[str] | None = None) -> dict[str, dict]:
    """`file,label[,other columns]` -> {file: {"label": "infected"|"clean"|None, other columns...}}."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "file" not in fields or "label" not in fields:
                raise LabelError(f"{csv_path}: the header must name the columns 'file' and 'label' "
                                 f"(found {reader.fieldnames}).",
                                 "Write the first line as: file,label")
            rows = {}
            lines: dict[str, int] = {}
            conflicts: list[str] = []
            for row in reader:
                line_no = reader.line_num      # the file's line, blank lines and quoted line breaks counted
                # cells past the header's columns come under the key None as a list: they name nothing
                row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
                name, label = row.get("file", ""), row.get("label", "").lower()
                if not name:
                    continue
                if label in ("", "unlabelled", "unlabeled", "none"):
                    label = None
                elif label not in LABELS:
                    raise LabelError(f"{csv_path}, line {line_no}: unknown label '{row.get('label')}' for {name}.",
                                     "Use 'infected' or 'clean' (or leave it empty for unlabelled).")
                row["label"] = label
                if name in rows and rows[name]["label"] != label:   # which one is meant? never guess
                    conflicts.append(f"{name} (line {lines[name]}: {rows[name]['label'] or 'unlabelled'}, "
                                     f"line {line_no}: {label or 'unlabelled'})")
                    continue
                lines.setdefault(name, line_no)
                rows[name] = row
    except UnicodeDecodeError as exc:
        raise LabelError(f"{csv_path} is not a text CSV file.", "Save the labels as UTF-8 CSV.") from exc
    except csv.Error as exc:
        raise LabelError(f"{csv_path} is not a valid CSV file ({exc}).",
                         "Save the labels as a plain CSV file.") from exc
    if conflicts:
        shown = "; ".join(conflicts[:3]) + (" ..." if len(conflicts) > 3 else "")
        raise LabelError(f"{csv_path} labels {len(conflicts)} file(s) twice, differently: {shown}.",
                         "Keep one row per file.")
    if known_files is not None:
        missing = sorted(set(rows) - set(known_files))
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise LabelError(f"{csv_path} names {len(missing)} file(s) that are not in the image folder: {shown}.",
                             "Fix the file names in the CSV or add the missing images.")
    return rows


def find_labels_csv(folder: Path) -> Path | None:
    for cand in (folder / "labels.csv", folder.parent / "labels.csv" if folder.name == "images" else None):
        if cand is not None and cand.is_file():
            return cand
    return None


def read_image_folder(path: str | Path, labels_csv: str | Path | None = None) -> Study:
    """Read every image of a folder (or of its `images/` subfolder) as one Study of 2D slices.

    Slices are sorted by file name and keyed by it. Labels, when a CSV is found, go to `study.meta["labels"]`.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder.", "Choose a folder of PNG/JPG slices.")
    imgs_dir = image_dir(folder)
    files = list_images(imgs_dir)
    if not files:
        raise InputError(f"No PNG/JPG images in {imgs_dir}.",
                         "Choose a folder with slice images (or an images/ subfolder), a DICOM folder or a NIfTI file.")
    warnings: list[str] = []
    arrays = [read_gray(p, warnings) for p in files]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        by_shape: dict[tuple, list[str]] = {}
        for p, a in zip(files, arrays):
            by_shape.setdefault(a.shape, []).append(p.name)
        detail = "; ".join(f"{s[1]}x{s[0]}: {len(v)} (e.g. {v[0]})" for s, v in by_shape.items())
        raise InputError(f"Images in {imgs_dir} have different sizes ({detail}).",
                         "Put slices of one size in a folder (resize or split them first).")
    is16 = any(a.dtype == np.uint16 for a in arrays)
    volume = np.stack(arrays).astype(np.float32)
    if len(set(warnings)) > 3:
        warnings = [f"{len(warnings)} colour images converted to gray (e.g. {warnings[0].split(':')[0]})."]
    for w in warnings:      # shown by the caller from Study.warnings
        log.debug(w)
    names = [p.name for p in files]
    meta: dict = {"bits": 16 if is16 else 8}
    csv_path = Path(labels_csv) if labels_csv else find_labels_csv(folder)
    if csv_path is not None:
        if not csv_path.is_file():
            raise LabelError(f"Labels file {csv_path} does not exist.", "Check the path.")
        meta["labels_csv"] = str(csv_path)
        meta["labels"] = read_labels_csv(csv_path, names)
    return Study(array=volume, slice_ids=names, is_hu=False, source=str(folder), kind="images",
                 warnings=warnings, meta=meta)
