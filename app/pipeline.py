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


def load_study_job(project, source_id: str):
    """Read a project's study with the core's loader (which also picks up a labels.csv that comes with it), and
    the newest prediction a run saved for it. Done({"study", "prediction", "run"})."""
    from covidseg_core.export import latest_prediction
    from covidseg_core.io.loader import open_study

    path = project.source_path(source_id)
    series_uid = project.source(source_id).get("series_uid")

    def job(cancel: CancelToken) -> Iterator:
        yield Progress("load", 0, 2, f"Reading {path.name}")
        study = open_study(path, series_uid=series_uid)
        cancel.raise_if_cancelled()
        for w in study.warnings:
            yield Message(w, "warning")
        yield Progress("load", 1, 2, f"{study.n_slices} slices")
        prediction, run = latest_prediction(project, source_id, study.shape)
        yield Progress("load", 2, 2, f"{study.n_slices} slices")
        yield Done({"study": study, "prediction": prediction, "run": run})
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


def export_job(project, source_id: str, path: Path, which: str):
    """covidseg_core.export: the mask (prediction, with corrections when `which` is "corrected") as NIfTI in the
    source geometry, and `<name>.quant.json/.csv` beside it. Done adds the quantification read back."""
    import json

    from covidseg_core.export import export_project

    def job(cancel: CancelToken) -> Iterator:
        result = None
        for ev in export_project(project, path, source_id=source_id, which=which, cancel=cancel):
            if isinstance(ev, Done):
                result = dict(ev.result)
            else:
                yield ev
        quant_json = next((p for p in result.get("quantification", []) if p.endswith(".json")), None)
        if quant_json:
            result["quantification_result"] = json.loads(Path(quant_json).read_text(encoding="utf-8"))
        yield Done(result)
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
