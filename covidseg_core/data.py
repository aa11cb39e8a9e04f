"""Training data: slices in [0,1] with their ids, image-level labels, volume groups and (optional) ground truth.

`--data DIR` is an image folder (`images/` + `labels.csv`, optional `masks/` for reporting only), or a DICOM
folder / NIfTI file together with a labels CSV keyed by slice index or slice id.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, LabelError
from .io.images import read_gray, read_labels_csv
from .io.loader import open_study
from .study import Study

log = logging.getLogger(__name__)


@dataclass
class SliceSet:
    images: np.ndarray                  # (n, H, W) float32 in [0, 1]
    ids: list[str]                      # stable slice ids (file names for image folders)
    labels: list[str | None]            # "infected" | "clean" | None (unlabelled)
    groups: list[str]                   # volume / patient of each slice (split by these, never by slice)
    gt_masks: np.ndarray | None = None  # (n, H, W) uint8 0/1, reporting only; None where absent
    has_gt: np.ndarray | None = None    # (n,) bool: which slices have a ground-truth mask
    study: Study | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx) -> "SliceSet":
        idx = np.asarray(idx, dtype=int)
        return SliceSet(
            images=self.images[idx], ids=[self.ids[i] for i in idx], labels=[self.labels[i] for i in idx],
            groups=[self.groups[i] for i in idx],
            gt_masks=None if self.gt_masks is None else self.gt_masks[idx],
            has_gt=None if self.has_gt is None else self.has_gt[idx], study=self.study, extra=dict(self.extra))

    def indices(self, label: str) -> np.ndarray:
        return np.array([i for i, lab in enumerate(self.labels) if lab == label], dtype=int)

    def counts(self) -> dict[str, int]:
        return {"infected": int(sum(l == "infected" for l in self.labels)),
                "clean": int(sum(l == "clean" for l in self.labels)),
                "unlabelled": int(sum(l is None for l in self.labels))}


def _read_masks(mask_dir: Path, ids: list[str], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    masks = np.zeros((len(ids), *shape), dtype=np.uint8)
    has = np.zeros(len(ids), dtype=bool)
    for i, name in enumerate(ids):
        p = mask_dir / name
        if not p.is_file():
            continue
        m = read_gray(p)
        if m.shape != shape:
            raise InputError(f"Mask {p} is {m.shape[1]}x{m.shape[0]} but its image is {shape[1]}x{shape[0]}.",
                             "Masks must have the size of their images.")
        masks[i] = m > 0
        has[i] = True
    return masks, has


def load_slice_set(path: str | Path, labels_csv: str | Path | None = None) -> SliceSet:
    """Read a data set for training or evaluation (see the module doc for the accepted layouts)."""
    path = Path(path)
    study = open_study(path, labels_csv=labels_csv)
    labels_meta: dict = study.meta.get("labels") or {}
    if study.kind != "images" and labels_csv is not None and not labels_meta:
        labels_meta = read_labels_csv(Path(labels_csv))
    used = labels_csv or study.meta.get("labels_csv")
    if not labels_meta and used:
        raise LabelError(f"{used} labels no slice (it has no rows after its header).",
                         "Add one line per slice: file,label with infected or clean.")
    if not labels_meta:
        raise LabelError(f"No slice labels found for {path}.",
                         "Add a labels.csv (file,label with infected|clean) next to the images, or pass --labels.")
    ids = list(study.slice_ids)
    labels: list[str | None] = []
    groups: list[str] = []
    by_index = study.kind != "images"
    for i, sid in enumerate(ids):
        row = labels_meta.get(sid) or (labels_meta.get(str(i)) if by_index else None)
        labels.append(row["label"] if row else None)
        groups.append((row or {}).get("volume") or Path(study.source).name)
    images = study.unit_range()
    gt = has = None
    mask_dir = path / "masks" if path.is_dir() else None
    if mask_dir is not None and mask_dir.is_dir():
        gt, has = _read_masks(mask_dir, ids, images.shape[1:])
    return SliceSet(images=images, ids=ids, labels=labels, groups=groups, gt_masks=gt, has_gt=has, study=study)


def data_fingerprint(slices) -> str:
    """Identifies the training data (images, ids, labels); the ground-truth masks are deliberately left out."""
    h = hashlib.sha1()
    h.update(repr((list(slices.ids), list(slices.labels), slices.images.shape)).encode())
    h.update(np.round(slices.images * 255).astype(np.uint8).tobytes())
    return h.hexdigest()
