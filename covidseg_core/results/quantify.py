"""Infected volume in mL and as a percentage of lung volume, per slice and per study."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..errors import InputError
from ..events import CancelToken, Progress, drive
from ..imaging.lungs import lung_field
from ..study import Study


def lung_fields_steps(study: Study, cancel: CancelToken | None = None):
    """Generator: the lung field of every slice (on what the networks see), with a Progress per slice and a
    cancel point; returns the mask (z, y, x)."""
    img = study.unit_range()
    lungs = np.zeros(study.shape, dtype=bool)
    for z in range(study.n_slices):
        if cancel is not None:
            cancel.raise_if_cancelled()
        lungs[z] = lung_field(img[z])
        yield Progress("quantify", z + 1, study.n_slices, "lung fields")
    return lungs


def lung_fields(study: Study) -> np.ndarray:
    """Lung-field mask (z, y, x) of a study, slice by slice."""
    return drive(lung_fields_steps(study))


def quantify(study: Study, mask: np.ndarray, lungs: np.ndarray | None = None) -> dict:
    """Per-slice and whole-study infected volume (mL) and infected fraction of the lung field (%).

    The infection counted toward the percentage is the part inside the lung field, so the ratio stays <= 100%.
    """
    mask = np.asarray(mask) > 0
    if mask.shape != study.shape:
        raise InputError(f"Mask of the wrong size: {mask.shape} for a study of {study.shape} (z, y, x).",
                         "Use a mask made for this study.")
    lungs = lung_fields(study) if lungs is None else np.asarray(lungs) > 0
    voxel_ml = float(np.prod(study.spacing)) / 1000.0      # mm^3 -> mL
    inf_vox = mask.reshape(mask.shape[0], -1).sum(1)
    lung_vox = (lungs | mask).reshape(mask.shape[0], -1).sum(1)   # a lesion is lung even where the field missed it
    rows = []
    for z in range(mask.shape[0]):
        rows.append({
            "slice": z, "slice_id": study.slice_ids[z],
            "infected_ml": round(float(inf_vox[z]) * voxel_ml, 4),
            "lung_ml": round(float(lung_vox[z]) * voxel_ml, 4),
            "infected_percent": round(100.0 * inf_vox[z] / lung_vox[z], 3) if lung_vox[z] else 0.0,
        })
    total_inf, total_lung = float(inf_vox.sum()), float(lung_vox.sum())
    return {
        "infected_ml": round(total_inf * voxel_ml, 3),
        "lung_ml": round(total_lung * voxel_ml, 3),
        "infected_percent": round(100.0 * total_inf / total_lung, 3) if total_lung else 0.0,
        "voxel_ml": voxel_ml,
        "spacing_mm": list(study.spacing),
        "values": "HU" if study.is_hu else "intensity",
        "slices": rows,
    }


def write_quantification(result: dict, base: str | Path) -> tuple[Path, Path]:
    """Write `<base>.json` (everything) and `<base>.csv` (one row per slice), atomically."""
    base = Path(base)
    json_path, csv_path = base.with_name(base.name + ".json"), base.with_name(base.name + ".csv")
    atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["slice", "slice_id", "infected_ml", "lung_ml", "infected_percent"])
    w.writeheader()
    w.writerows(result["slices"])
    atomic_write_text(csv_path, buf.getvalue())
    return json_path, csv_path
