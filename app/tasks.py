"""The app's jobs: generators of covidseg_core events, built from core calls only, each ending with Done(a typed
result). The controller hands them to jobs.py, which runs them on the job thread; nothing here touches a widget.

Reading a study, measuring volumes and exporting are plain calls in the core; here they become small jobs (a
Progress before and after, a Done with the result) so that everything slow goes through jobs.py.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from covidseg_core.errors import Cancelled, TrainingError
from covidseg_core.events import CancelToken, Done, EpochReport, Message, Progress, relay
from covidseg_core.study import Study

log = logging.getLogger(__name__)


# --- what the jobs give back ---------------------------------------------------------------------------------

@dataclass
class StudyLoaded:
    study: Study
    prediction: np.ndarray | None = None       # the newest run's saved prediction of this study, if any
    run: str | None = None                     # ... and that run's folder
    epochs: list[EpochReport] = field(default_factory=list)   # that run's loss curves


@dataclass
class Quantified:
    result: dict                               # covidseg_core.results.quantify.quantify
    lungs: np.ndarray                          # the lung fields it measured (kept by the session)


@dataclass
class PipelineResult:
    """What a train or predict job made for the open study."""
    run: str | None
    prediction: np.ndarray | None
    pseudo: dict[str, np.ndarray] = field(default_factory=dict)     # slice id -> RUN/pseudo PNG
    fused: dict[str, np.ndarray] = field(default_factory=dict)      # slice id -> fused CAM in [0, 1]
    quantification: Quantified | None = None
    metrics: dict | None = None                # the core's train metrics (None for predict)


@dataclass
class Exported:
    mask: str
    files: list[str]                           # the mask and its quantification files
    quantification: dict | None                # read back from <name>.quant.json


# --- small jobs ------------------------------------------------------------------------------------------------

def load_study_job(project, source_id: str):
    """Read a project's study with the core's loader (which also picks up a labels.csv that comes with it), and
    the newest prediction a run saved for it. Done(StudyLoaded)."""
    from covidseg_core.io.loader import open_study
    from covidseg_core.results.export import latest_prediction
    from covidseg_core.runs import RunFolder

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
        yield Done(StudyLoaded(study, prediction, run, RunFolder(run).epoch_reports() if run else []))
    return job


def list_series_job(folder: Path):
    """The series of a DICOM folder (reading headers is I/O: not on the GUI thread). Done(list of series)."""
    from covidseg_core.io.dicom import list_series

    def job(cancel: CancelToken) -> Iterator:
        yield Progress("load", 0, 1, f"Reading the DICOM headers of {folder.name}")
        series = list_series(folder)
        yield Progress("load", 1, 1)
        yield Done(series)
    return job


def write_demo_job(out: Path):
    from covidseg_core.demo import write_demo

    def job(cancel: CancelToken) -> Iterator:
        yield Progress("demo", 0, 1, "writing the demo study")
        info = write_demo(out)
        yield Progress("demo", 1, 1)
        yield Done(info)
    return job


def describe_device(wanted: str) -> tuple[str, dict]:
    """Status-bar text for the device training will use, and the environment (versions) for About. Warms torch
    up first (jobs.warm_up_torch), so its lazy imports happen at start-up on the thread pool, not in the middle
    of the user's first training."""
    from .jobs import warm_up_torch

    if not warm_up_torch():
        return ("Device: none (PyTorch is not installed: training is unavailable)",
                {"torch": "not installed", "cuda": None})
    import torch

    from covidseg_core.runs import environment_info

    cuda = torch.cuda.is_available()
    if wanted == "cuda" and not cuda:
        text = "Device: CPU (no CUDA GPU found)"
    elif cuda and wanted in ("auto", "cuda"):
        text = f"Device: GPU {torch.cuda.get_device_name(0)}"
    else:
        text = f"Device: CPU ({os.cpu_count() or 1} cores)"
    return text, environment_info()


def quantify_steps(study: Study, mask: np.ndarray, lungs: np.ndarray | None, cancel: CancelToken):
    """Generator: the lung fields when not known yet (covidseg_core.results.quantify), then the volumes.
    Returns Quantified."""
    from covidseg_core.results.quantify import lung_fields_steps, quantify

    if lungs is None:
        lungs = yield from lung_fields_steps(study, cancel)
    return Quantified(quantify(study, mask, lungs), lungs)


def quantify_job(project, source_id: str, study: Study, prediction: np.ndarray | None, lungs: np.ndarray | None):
    """The volumes of what the user sees: the prediction with the corrections in place (assembled by
    covidseg_core.results.export, reading the corrections here on the job thread). Done(Quantified)."""
    from covidseg_core.results.export import assemble_mask

    shown = prediction if prediction is not None else np.zeros(study.shape, np.uint8)

    def job(cancel: CancelToken) -> Iterator:
        mask, _ = assemble_mask(project, source_id, study, "corrected", prediction=shown)
        yield Done((yield from quantify_steps(study, mask, lungs, cancel)))
    return job


def export_job(project, source_id: str, path: Path, which: str, overwrite: bool = False, fmt: str = "nifti"):
    """covidseg_core.results.export: the mask (the newest prediction, with corrections when `which` is
    "corrected") as NIfTI in the source geometry or as a DICOM SEG (`fmt` "dicom-seg"), and
    `<name>.quant.json/.csv` beside it. Done(Exported)."""
    import json

    from covidseg_core.results.export import export_project

    def job(cancel: CancelToken) -> Iterator:
        export = export_project(project, path, source_id=source_id, which=which, cancel=cancel, overwrite=overwrite,
                                fmt=fmt)
        result = yield from relay(export)
        quant_json = next((p for p in result.get("quantification", []) if p.endswith(".json")), None)
        quant = json.loads(Path(quant_json).read_text(encoding="utf-8")) if quant_json else None
        yield Done(Exported(result["mask"], [result["mask"], *result.get("quantification", [])], quant))
    return job


def report_job(project, source_id: str, path: Path, overwrite: bool = False):
    """covidseg_core.results.report: the one-page PDF of the study (corrections applied). Done(its summary)."""
    from covidseg_core.results.report import report_job as core_report

    def job(cancel: CancelToken) -> Iterator:
        yield Done((yield from relay(core_report(project, path, source_id=source_id, cancel=cancel,
                                                 overwrite=overwrite))))
    return job


def import_seg_job(project, path: Path):
    """covidseg_core.results.seg_import: a DICOM SEG matched to the project's study by its UIDs and saved as that
    study's newest mask (a seg-import run). Done((source id, mask, run folder))."""
    from covidseg_core.results.seg_import import import_seg

    def job(cancel: CancelToken) -> Iterator:
        yield Progress("load", 0, 1, f"Reading {path.name}")
        result = import_seg(project, path)
        yield Progress("load", 1, 1)
        yield Done(result)
    return job


# --- training and prediction -------------------------------------------------------------------------------------

def last_usable_run(project) -> Path | None:
    """The newest run of the project that has a segmenter to predict with."""
    from covidseg_core.runs import RunFolder

    for run in reversed(project.runs):
        if RunFolder(run["path"]).has_model():
            return Path(run["path"])
    return None


def slice_set_for(project, source_id: str, study: Study):
    """The core's training input for one study: its slices in [0, 1] and the project's labels."""
    from covidseg_core.data import SliceSet

    labels = project.labels(source_id)
    group = Path(study.source).name or source_id
    return SliceSet(images=study.unit_range(), ids=list(study.slice_ids),
                    labels=[labels.get(s) for s in study.slice_ids], groups=[group] * study.n_slices, study=study)


def write_pixel_labels(project, source_id: str, study: Study, folder: Path) -> int:
    """The user's corrections as the core's --pixel-labels folder (PNG 0/255 named as the core names slices)."""
    from PIL import Image

    from covidseg_core.atomic import atomic_write
    from covidseg_core.runs import slice_png_name

    n = 0
    for slice_id in project.corrections(source_id):
        if slice_id not in study.slice_ids:
            continue
        mask = project.correction(source_id, slice_id)
        if mask is None:
            continue
        atomic_write(folder / slice_png_name(slice_id), lambda tmp, m=mask: Image.fromarray(m).save(tmp, format="PNG"))
        n += 1
    return n


def read_run_pngs(folder: Path, study: Study) -> dict[str, np.ndarray]:
    """RUN/pseudo or RUN/cams: slice id -> PNG array, for the slices that have one."""
    from covidseg_core.io.images import read_gray
    from covidseg_core.runs import slice_png_name

    if not folder.is_dir():
        return {}
    paths = {sid: folder / slice_png_name(sid) for sid in study.slice_ids}
    return {sid: read_gray(p) for sid, p in paths.items() if p.is_file()}


def train_config(settings: dict):
    """Project settings -> the core's TrainConfig: every setting that names one of its fields, the rest default.
    (The user's corrections become pixel_labels per run, so that field is not taken from the settings.)"""
    from covidseg_core.train_config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"pixel_labels", "fast"}
    return TrainConfig(**{k: v for k, v in settings.items() if k in fields and v is not None})


def _run_summary(metrics: dict | None, status: str, source_id: str, settings: dict, **extra) -> dict:
    summary = {"status": status, "source": source_id, "settings": settings, **extra}
    seg = (metrics or {}).get("segmenter") or {}
    if "best_val_loss" in seg:
        summary["best_val_loss"] = seg["best_val_loss"]
    if metrics and "seconds" in metrics:
        summary["seconds"] = metrics["seconds"]
    return summary


def train_job(project, source_id: str, study: Study, settings: dict, lungs: np.ndarray | None):
    """The whole pipeline for the open study, as one job: covidseg_core.pipeline.train_job into a new run of the
    project (stage 1, pseudo masks, segmenter, with the user's corrections as pixel labels), then prediction
    of the study with that run, saved in the run (results.export.save_prediction), then the volumes.
    Everything, imports included, happens on the job thread. Done(PipelineResult)."""
    def job(cancel: CancelToken) -> Iterator:
        try:
            from covidseg_core import pipeline
        except ImportError as exc:
            raise TrainingError(f"Training is not available in this installation ({exc}).",
                                "Install PyTorch (see the README); labelling and viewing still work.") from exc
        yield Progress("classifier", 0, 1, "preparing the slices")
        slices = slice_set_for(project, source_id, study)
        cfg = train_config(settings)
        device = settings.get("device", "auto")
        run_dir = project.new_run_dir()
        pixel_dir = project.folder / "pixel_labels" / run_dir.name
        n_pixel = write_pixel_labels(project, source_id, study, pixel_dir)
        if n_pixel:
            cfg.pixel_labels = str(pixel_dir)
        project.add_run(run_dir, _run_summary(None, "running", source_id, settings, pixel_labels=n_pixel))
        try:
            metrics = yield from relay(pipeline.train_job(study.source, run_dir, cfg, device=device, cancel=cancel,
                                                          slices=slices))
            result = yield from _predict_steps(run_dir, project, source_id, study, device, lungs, cancel)
        except Cancelled:
            project.add_run(run_dir, _run_summary(None, "cancelled", source_id, settings, pixel_labels=n_pixel))
            raise
        except Exception as exc:  # recorded in the run history, then shown by the GUI (re-raised)
            project.add_run(run_dir, _run_summary(None, "failed", source_id, settings, error=str(exc)))
            raise
        project.add_run(run_dir, _run_summary(metrics, "done", source_id, settings, pixel_labels=n_pixel,
                                              infected_ml=result.quantification.result["infected_ml"]))
        yield Done(dataclasses.replace(result, metrics=metrics))
    return job


def _predict_steps(run_dir: Path, project, source_id: str, study: Study, device: str, lungs, cancel):
    """Generator: predict the study with a run, save the prediction in the run, read its pseudo masks and
    fused CAMs, measure the volumes. Returns PipelineResult."""
    from covidseg_core.infer.model import load_run_model
    from covidseg_core.infer.predict import predict_masks
    from covidseg_core.results.export import save_prediction
    from covidseg_core.runs import RunFolder

    yield Progress("predict", 0, study.n_slices, "loading the network")
    lm = load_run_model(run_dir, device)
    mask = yield from predict_masks(lm, study.unit_range(), cancel=cancel)
    save_prediction(run_dir, source_id, mask, study)
    run = RunFolder(run_dir)
    pseudo = read_run_pngs(run.pseudo_dir, study)
    fused = {sid: a.astype(np.float32) / 255.0 for sid, a in read_run_pngs(run.cams_dir, study).items()}
    quant = yield from quantify_steps(study, mask, lungs, cancel)
    return PipelineResult(str(run_dir), mask, pseudo, fused, quant)


def predict_job(run: Path, project, source_id: str, study: Study, device: str, lungs: np.ndarray | None):
    """Predict the open study with an existing run (e.g. after reopening a project). Done(PipelineResult)."""
    def job(cancel: CancelToken) -> Iterator:
        yield Done((yield from _predict_steps(Path(run), project, source_id, study, device, lungs, cancel)))
    return job
