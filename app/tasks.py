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

from covidseg_core.errors import TrainingError
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
    mask: str                                  # the mask (for every study: the folder)
    files: list[str]                           # the mask(s) and quantification files
    quantification: dict | None                # read back from <name>.quant.json (one study)
    notes: list[str] = field(default_factory=list)      # studies left out of a folder export, and why


# --- small jobs ------------------------------------------------------------------------------------------------

def suggestion_text(pick: dict) -> str:
    """The status line for a suggested slice: why it was chosen (the classifier is unsure) and how likely the run
    finds infection there (the classifier with the label-free prior; covidseg_core.weak.scoring)."""
    return (f"Suggested: slice {pick['index'] + 1} of {pick['study']} (classifier {pick['probability']:.2f}, "
            f"unsure; probability of infection with the label-free prior {pick['slice_probability']:.2f})")


def suggest_job(project, studies: dict, device: str = "cpu"):
    """The slices to label next across every study (covidseg_core.suggest), scored by the newest run's
    classifier. Done(list of suggestions, best first)."""
    from covidseg_core.suggest import suggest_slices

    def job(cancel: CancelToken) -> Iterator:
        yield Progress("suggest", 0, 1, "scoring the unlabelled slices")
        picks = suggest_slices(project, None, n=50, device="cpu" if device == "auto" else device,
                               studies=dict(studies))
        yield Progress("suggest", 1, 1)
        yield Done(picks)
    return job


def relocate_job(project, source_id: str, path: Path):
    """covidseg_core.project.studies.relocate_study: a missing study read at its new place, checked to be the same
    study, and the project pointed at it. Done(the study)."""
    from covidseg_core.project.studies import relocate_study

    def job(cancel: CancelToken) -> Iterator:
        yield Progress("load", 0, 1, f"Reading {path.name}")
        study = relocate_study(project, source_id, path)
        yield Progress("load", 1, 1, f"{study.n_slices} slices")
        yield Done(study)
    return job


def load_study_job(project, source_id: str, study: Study | None = None):
    """Read a project's study with the core's loader (which also picks up a labels.csv that comes with it), unless
    it was read already (`study`), and the newest prediction a run saved for it. Done(StudyLoaded)."""
    from covidseg_core.io.loader import open_study
    from covidseg_core.results.export import latest_prediction
    from covidseg_core.runs import RunFolder

    path = project.source_path(source_id)
    series_uid = project.source(source_id).get("series_uid")

    def job(cancel: CancelToken) -> Iterator:
        yield Progress("load", 0, 2, f"Reading {path.name}")
        if not path.exists():
            from covidseg_core.errors import InputError
            raise InputError(f"The study {path} is missing: it was moved or deleted. Its labels are kept.",
                             "Put it back where it was, or point the project at its new place (File > Locate "
                             "moved study…).")
        opened = study if study is not None else open_study(path, series_uid=series_uid)
        cancel.raise_if_cancelled()
        for w in opened.warnings:
            yield Message(w, "warning")
        yield Progress("load", 1, 2, f"{opened.n_slices} slices")
        prediction, run = latest_prediction(project, source_id, opened.shape)
        yield Progress("load", 2, 2, f"{opened.n_slices} slices")
        yield Done(StudyLoaded(opened, prediction, run, RunFolder(run).epoch_reports() if run else []))
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


def export_studies_job(project, folder: Path, which: str, overwrite: bool = False, fmt: str = "nifti",
                       source_ids: list[str] | None = None):
    """covidseg_core.results.export.export_studies: one mask per study of the project into `folder`, named from
    the study, each in its source's geometry (a DICOM SEG per DICOM study with `fmt` "dicom-seg").
    Done(Exported: mask = the folder, notes = the studies left out and why)."""
    from covidseg_core.results.export import export_studies

    def job(cancel: CancelToken) -> Iterator:
        result = yield from relay(export_studies(project, folder, which=which, source_ids=source_ids, cancel=cancel,
                                                 overwrite=overwrite, fmt=fmt))
        files = [f for r in result["studies"] for f in (r["mask"], *r.get("quantification", []))]
        notes = [f"{s['source']} not exported: {s['reason']}" for s in result.get("skipped", [])]
        yield Done(Exported(result["folder"], files, None, notes))
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


def last_classifier_run(project) -> Path | None:
    """The newest run of the project with a classifier (what suggestions are scored with)."""
    from covidseg_core.suggest import newest_classifier_run

    return newest_classifier_run(project)


def read_run_pngs(folder: Path, study: Study, source_id: str | None = None) -> dict[str, np.ndarray]:
    """RUN/pseudo or RUN/cams: slice id -> PNG array at the study's size, for the slices that have one (named
    <source>__<slice> by a project run, by the slice alone by a one-study run)."""
    from covidseg_core.imaging.resize import to_shape
    from covidseg_core.io.images import read_gray
    from covidseg_core.project.studies import training_slice_id
    from covidseg_core.runs import slice_png_name

    if not folder.is_dir():
        return {}
    out = {}
    for sid in study.slice_ids:
        names = ([slice_png_name(training_slice_id(source_id, sid))] if source_id else []) + [slice_png_name(sid)]
        path = next((folder / n for n in names if (folder / n).is_file()), None)
        if path is not None:
            out[sid] = to_shape(read_gray(path), tuple(study.shape[1:]), nearest=True)
    return out


def train_config(settings: dict):
    """Project settings -> the core's TrainConfig: every setting that names one of its fields, the rest default.
    (The user's corrections become pixel_labels per run, so that field is not taken from the settings.)"""
    from covidseg_core.train_config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"pixel_labels", "fast"}
    return TrainConfig(**{k: v for k, v in settings.items() if k in fields and v is not None})


def train_job(project, source_id: str, study: Study, settings: dict, lungs: np.ndarray | None):
    """The whole pipeline on every study of the project, as one job: covidseg_core.project_training (stage 1,
    pseudo masks, segmenter on the labels and corrections of all studies, each study predicted and saved in the
    run) into a new run of the project, then the open study's prediction, pseudo masks, attention maps and
    volumes. The other studies are read on the job thread. Everything, imports included, happens on the job
    thread. Done(PipelineResult)."""
    def job(cancel: CancelToken) -> Iterator:
        try:
            from covidseg_core import project_training
        except ImportError as exc:
            raise TrainingError(f"Training is not available in this installation ({exc}).",
                                "Install PyTorch (see the README); labelling and viewing still work.") from exc
        yield Progress("classifier", 0, 1, "preparing the slices")
        cfg = train_config(settings)
        device = settings.get("device", "auto")
        run_dir = project.new_run_dir()
        own = _own_maps(source_id, study)
        metrics = yield from relay(project_training.project_train_job(
            project, run_dir, cfg, device=device, cancel=cancel, studies={source_id: study}, settings=settings),
            own)
        result = yield from _predict_steps(run_dir, project, source_id, study, device, lungs, cancel, predicted=True)
        yield Done(dataclasses.replace(result, metrics=metrics))
    return job


def _own_maps(source_id: str, study: Study):
    """relay's on_event: an epoch's attention maps keyed by the open study's slice ids (training reports them by
    <source>__<slice id> across every study; the other studies' maps are dropped)."""
    from covidseg_core.project.studies import split_training_id

    known = set(study.slice_ids)

    def on_event(ev) -> None:
        if isinstance(ev, EpochReport) and ev.maps:
            maps = {}
            for key, m in ev.maps.items():
                sid, slice_id = split_training_id(key)
                if sid == source_id and slice_id in known:
                    maps[slice_id] = m
            ev.maps = maps
    return on_event


def _predict_steps(run_dir: Path, project, source_id: str, study: Study, device: str, lungs, cancel,
                   predicted: bool = False):
    """Generator: predict the study with a run (or, `predicted`, read what the run saved for it), save the
    prediction in the run, read its pseudo masks and fused CAMs, measure the volumes. Returns PipelineResult."""
    from covidseg_core.infer.model import load_run_model
    from covidseg_core.infer.predict import predict_masks
    from covidseg_core.results.export import save_prediction
    from covidseg_core.runs import RunFolder

    from covidseg_core.results.export import latest_prediction_of_run

    mask = latest_prediction_of_run(run_dir, source_id, study.shape) if predicted else None
    if mask is None:
        yield Progress("predict", 0, study.n_slices, "loading the network")
        lm = load_run_model(run_dir, device)
        if lm.note:              # the run's ONNX export is not used: why
            yield Message(lm.note, "warning")
        mask = yield from predict_masks(lm, study.unit_range(), cancel=cancel)
        save_prediction(run_dir, source_id, mask, study)
    run = RunFolder(run_dir)
    pseudo = read_run_pngs(run.pseudo_dir, study, source_id)
    fused = {sid: a.astype(np.float32) / 255.0 for sid, a in read_run_pngs(run.cams_dir, study, source_id).items()}
    quant = yield from quantify_steps(study, mask, lungs, cancel)
    return PipelineResult(str(run_dir), mask, pseudo, fused, quant)


def predict_job(run: Path, project, source_id: str, study: Study, device: str, lungs: np.ndarray | None):
    """Predict the open study with an existing run (e.g. after reopening a project). Done(PipelineResult)."""
    def job(cancel: CancelToken) -> Iterator:
        yield Done((yield from _predict_steps(Path(run), project, source_id, study, device, lungs, cancel)))
    return job
