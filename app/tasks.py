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
        yield Done({"study": study, "prediction": prediction, "run": run,
                    "epochs": run_loss_history(Path(run)) if run else []})
    return job


def run_loss_history(run: Path) -> list:
    """The loss curves of a finished run (RUN/epochs.jsonl) as EpochReports, to show again when it is reopened.
    A key named "loss" or ending in "_loss" is a loss; the rest of each line are metrics."""
    from covidseg_core.events import EpochReport
    from covidseg_core.runs import RunFolder

    reports = []
    records = RunFolder(run).read_epochs()
    last = {}
    for r in records:
        last[r.get("stage")] = max(last.get(r.get("stage"), 0), int(r.get("epoch", 0)))
    for r in records:
        losses = {(k[:-5] if k.endswith("_loss") else k): float(v) for k, v in r.items()
                  if (k == "loss" or k.endswith("_loss")) and isinstance(v, (int, float))}
        metrics = {k: v for k, v in r.items() if k not in ("stage", "epoch", "seconds") and isinstance(v, (int, float))
                   and not (k == "loss" or k.endswith("_loss"))}
        reports.append(EpochReport(str(r.get("stage")), int(r.get("epoch", 0)), last.get(r.get("stage"), 0),
                                   losses=losses, metrics=metrics, seconds=float(r.get("seconds", 0.0))))
    return reports


def write_demo_job(out: Path):
    from covidseg_core.demo import write_demo

    def job(cancel: CancelToken) -> Iterator:
        yield Progress("demo", 0, 1, "writing the demo study")
        info = write_demo(out)
        yield Progress("demo", 1, 1)
        yield Done(info)
    return job


def describe_device(wanted: str) -> str:
    """Status-bar text for the device training will use. Warms torch up first (jobs.warm_up_torch), so its lazy
    imports happen at start-up on the thread pool, not in the middle of the user's first training."""
    from .jobs import warm_up_torch

    if not warm_up_torch():
        return "Device: none (PyTorch is not installed: training is unavailable)"
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


def slice_set_for(project, source_id: str, study: Study):
    """The core's training input for one study: its slices in [0, 1] and the project's labels."""
    from covidseg_core.data import SliceSet
    from covidseg_core.preprocess import to_unit_range

    labels = project.labels(source_id)
    images = to_unit_range(study.array, study.is_hu, study.meta.get("bits", 8))
    group = Path(study.source).name or source_id
    return SliceSet(images=images, ids=list(study.slice_ids), labels=[labels.get(s) for s in study.slice_ids],
                    groups=[group] * study.n_slices, study=study)


def write_pixel_labels(project, source_id: str, study: Study, folder: Path) -> int:
    """The user's corrections as the core's --pixel-labels folder (PNG 0/255 named as the core names slices)."""
    from covidseg_core.atomic import atomic_write
    from covidseg_core.training import pseudo_mask_path
    from PIL import Image

    n = 0
    for slice_id in project.corrections(source_id):
        if slice_id not in study.slice_ids:
            continue
        mask = project.correction(source_id, slice_id)
        if mask is None:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        path = pseudo_mask_path(folder, slice_id)
        atomic_write(path, lambda tmp, m=mask: Image.fromarray(m).save(tmp, format="PNG"))
        n += 1
    return n


def read_run_pngs(folder: Path, study: Study) -> dict[str, np.ndarray]:
    """RUN/pseudo or RUN/cams: slice id -> PNG array, for the slices that have one."""
    from covidseg_core.io.images import read_gray
    from covidseg_core.training import pseudo_mask_path

    out = {}
    if not folder.is_dir():
        return out
    for sid in study.slice_ids:
        p = pseudo_mask_path(folder, sid)
        if p.is_file():
            out[sid] = read_gray(p)
    return out


def train_config(settings: dict):
    """Project settings -> the core's TrainConfig: every setting that names one of its fields, the rest default.
    (The user's corrections become pixel_labels per run, so that field is not taken from the settings.)"""
    import dataclasses

    from covidseg_core.training import TrainConfig

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
    """The whole pipeline for the open study, as one job: covidseg_core.training.train_job into a new run of the
    project (stage 1, pseudo masks, segmenter, with the user's corrections as pixel labels), then prediction
    of the study with that run, saved in the run (covidseg_core.export.save_prediction), then the volumes.
    Everything, imports included, happens on the job thread.

    Done({"run", "prediction", "pseudo", "fused", "quantification", "lungs", "metrics"})."""
    from covidseg_core.errors import Cancelled

    def job(cancel: CancelToken) -> Iterator:
        training = _core_module("training")
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
            metrics = None
            for ev in training.train_job(study.source, run_dir, cfg, device=device, cancel=cancel, slices=slices):
                if isinstance(ev, Done):
                    metrics = ev.result
                else:
                    yield ev
            result = yield from _predict_steps(run_dir, project, source_id, study, device, lungs, cancel)
        except Cancelled:
            project.add_run(run_dir, _run_summary(None, "cancelled", source_id, settings, pixel_labels=n_pixel))
            raise
        except Exception as exc:  # recorded in the run history, then shown by the GUI (re-raised)
            project.add_run(run_dir, _run_summary(None, "failed", source_id, settings, error=str(exc)))
            raise
        project.add_run(run_dir, _run_summary(metrics, "done", source_id, settings, pixel_labels=n_pixel,
                                              infected_ml=result["quantification"]["infected_ml"]))
        result["metrics"] = metrics
        yield Done(result)
    return job


def _predict_steps(run_dir: Path, project, source_id: str, study: Study, device: str, lungs, cancel):
    """Generator: predict the study with a run, save the prediction in the run, read its pseudo masks and
    fused CAMs, measure the volumes. Returns the result dict."""
    from covidseg_core.export import save_prediction
    from covidseg_core.inference import load_run_model, predict_masks
    from covidseg_core.preprocess import to_unit_range

    yield Progress("predict", 0, study.n_slices, "loading the network")
    lm = load_run_model(run_dir, device)
    images = to_unit_range(study.array, study.is_hu, study.meta.get("bits", 8))
    mask = yield from predict_masks(lm, images, cancel=cancel)
    save_prediction(run_dir, source_id, mask, study)
    pseudo = read_run_pngs(run_dir / "pseudo", study)
    fused = {sid: a.astype(np.float32) / 255.0 for sid, a in read_run_pngs(run_dir / "cams", study).items()}
    quant = None
    for ev in quantify_steps(study, mask, lungs, cancel):
        if isinstance(ev, Done):
            quant, lungs = ev.result
        else:
            yield ev
    return {"run": str(run_dir), "prediction": mask, "pseudo": pseudo, "fused": fused, "quantification": quant,
            "lungs": lungs}


def predict_job(run: Path, project, source_id: str, study: Study, device: str, lungs: np.ndarray | None):
    """Predict the open study with an existing run (e.g. after reopening a project)."""
    def job(cancel: CancelToken) -> Iterator:
        result = yield from _predict_steps(Path(run), project, source_id, study, device, lungs, cancel)
        yield Done(result)
    return job
