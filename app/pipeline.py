"""The jobs the app runs on the job thread, each a generator of covidseg_core events built from core calls only.

Reading a study, measuring volumes and exporting are not generators in the core; here they are wrapped in small
generators (a Progress before and after, a Done with the result) so that everything slow goes through jobs.py.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from covidseg_core.events import CancelToken, Done, Message, Progress
from covidseg_core.study import Study

log = logging.getLogger(__name__)


def load_study_job(path: Path, series_uid: str | None = None):
    """Read a study with the core's loader (it also picks up a labels.csv that comes with the study)."""
    from covidseg_core.io.loader import open_study

    def job(cancel: CancelToken) -> Iterator:
        yield Progress("load", 0, 1, f"Reading {path.name}")
        study = open_study(path, series_uid=series_uid)
        cancel.raise_if_cancelled()
        for w in study.warnings:
            yield Message(w, "warning")
        yield Progress("load", 1, 1, f"{study.n_slices} slices")
        yield Done(study)
    return job


def write_demo_job(out: Path):
    from covidseg_core.demo import write_demo

    def job(cancel: CancelToken) -> Iterator:
        yield Progress("demo", 0, 1, "writing the demo study")
        info = write_demo(out)
        yield Progress("demo", 1, 1)
        yield Done(info)
    return job


def describe_device(wanted: str) -> str:
    """Status-bar text for the device training will use (imports torch: call it off the GUI thread)."""
    import torch

    cuda = torch.cuda.is_available()
    if wanted == "cuda" and not cuda:
        return "Device: CPU (no CUDA GPU found)"
    if cuda and wanted in ("auto", "cuda"):
        return f"Device: GPU {torch.cuda.get_device_name(0)}"
    import os
    return f"Device: CPU ({os.cpu_count() or 1} cores)"


def lung_fields_job(study: Study):
    """The lung field of every slice (covidseg_core.lungs), slice by slice so it can report progress and stop."""
    from covidseg_core.lungs import lung_field
    from covidseg_core.preprocess import to_unit_range

    def job(cancel: CancelToken) -> Iterator:
        n = study.n_slices
        lungs = np.zeros(study.array.shape, dtype=bool)
        bits = study.meta.get("bits", 8)
        for z in range(n):
            cancel.raise_if_cancelled()
            lungs[z] = lung_field(to_unit_range(study.array[z], study.is_hu, bits))
            yield Progress("quantify", z + 1, n, "lung fields")
        yield Done(lungs)
    return job


def quantify_steps(study: Study, mask: np.ndarray, lungs: np.ndarray | None, cancel: CancelToken):
    """Generator: lung fields when not known yet, then covidseg_core.quantify. Done((result, lungs))."""
    from covidseg_core.quantify import quantify

    if lungs is None:
        result = None
        for ev in lung_fields_job(study)(cancel):
            if isinstance(ev, Done):
                lungs = ev.result
            else:
                yield ev
    result = quantify(study, mask, lungs)
    yield Done((result, lungs))


def quantify_job(study: Study, mask: np.ndarray, lungs: np.ndarray | None):
    def job(cancel: CancelToken) -> Iterator:
        yield from quantify_steps(study, mask, lungs, cancel)
    return job


def export_base(path: Path) -> Path:
    """mask.nii.gz -> mask_volumes (then .csv / .json)."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".mha", ".nrrd"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.parent / f"{name}_volumes"


def export_job(study: Study, mask: np.ndarray, path: Path, lungs: np.ndarray | None, with_quantification: bool):
    """Write the mask as NIfTI in the study's geometry, then (optionally) the volumes as CSV/JSON next to it."""
    from covidseg_core.io.nifti import write_mask_nifti
    from covidseg_core.quantify import write_quantification

    def job(cancel: CancelToken) -> Iterator:
        total = 2 if with_quantification else 1
        yield Progress("export", 0, total, f"writing {path.name}")
        written = [str(write_mask_nifti(mask, study, path))]
        yield Progress("export", 1, total, f"wrote {path.name}")
        result, lungs_out = None, lungs
        if with_quantification:
            for ev in quantify_steps(study, mask, lungs, cancel):
                if isinstance(ev, Done):
                    result, lungs_out = ev.result
                else:
                    yield ev
            json_path, csv_path = write_quantification(result, export_base(path))
            written += [str(csv_path), str(json_path)]
            yield Progress("export", 2, total, "wrote the volumes")
        yield Done({"paths": written, "quantification": result, "lungs": lungs_out})
    return job


# --- training and prediction -------------------------------------------------------------------------------------

def _core_module(name: str):
    import importlib

    from covidseg_core.errors import TrainingError
    try:
        return importlib.import_module(f"covidseg_core.{name}")
    except ImportError as exc:
        raise TrainingError(f"This installation has no covidseg_core.{name} ({exc}).",
                            "Update CovidSeg Assist; labelling and viewing still work.") from exc


def last_usable_run(project) -> Path | None:
    """The newest run of the project that finished and has a segmenter checkpoint."""
    for run in reversed(project.runs):
        path = Path(run["path"])
        if (path / "checkpoints" / "best.pt").is_file():
            return path
    return None


def train_job(project, source_id: str, study: Study, settings: dict, lungs: np.ndarray | None):
    training = _core_module("training")
    raise NotImplementedError(training)


def predict_job(run: Path, study: Study, lungs: np.ndarray | None):
    inference = _core_module("inference")
    raise NotImplementedError(inference)
