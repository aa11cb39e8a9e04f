"""Training on a whole project: every study's labels and corrections in one run (pipeline.train_job on the
combined slices of project/studies.py), then every study predicted with it (saved in the run, where export and
the app find it) and measured. The run is recorded in the project with the studies it trained on, so each study
knows its training status.

The validation split is by study when the project has several (their slices are grouped by study), by blocks of
neighbouring slices when it has one (seg/targets.split_validation).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path

from .errors import Cancelled
from .events import CancelToken, Done, Message, Progress, relay
from .project.studies import check_labelled, project_slices, write_pixel_labels
from .train_config import TrainConfig

log = logging.getLogger(__name__)

PIXEL_LABELS_DIR = "pixel_labels"


def pixel_labels_dir(project, out: Path) -> Path:
    """Where a run's pixel labels (the user's corrections) are written: in the project, one folder per run
    folder, the same one when the same run is resumed."""
    digest = hashlib.sha1(str(Path(out).resolve()).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return project.folder / PIXEL_LABELS_DIR / f"{Path(out).name}-{digest}"


def _summary(status: str, sources: list[str], settings: dict | None, **extra) -> dict:
    return {"status": status, "sources": sources, "source": sources[0] if len(sources) == 1 else None,
            "settings": settings or {}, **extra}


def project_train_job(project, out: str | Path, cfg: TrainConfig | None = None, device: str = "auto",
                      cancel: CancelToken | None = None, studies: dict | None = None, settings: dict | None = None,
                      measure: bool = True, clock=time.monotonic):
    """Generator job: stage 1 and stage 2 on every study of `project`, into run folder `out` (resumable like
    pipeline.train_job), then each study predicted, saved in the run and (with `measure`) quantified.
    Ends with Done(metrics), where metrics["studies"] maps source id -> name, slices, labels, infected volume.
    `studies` may pass studies already read (source id -> Study)."""
    from . import pipeline

    cfg = cfg or TrainConfig()
    cancel = cancel or CancelToken()
    out = Path(out)
    yield Message(f"reading the {len(project.sources)} studies of the project")
    combined = project_slices(project, studies)
    for note in combined.skipped:
        yield Message(note, "warning")
    check_labelled(combined)
    source_ids = [p.source_id for p in combined.parts]
    pixel_dir = pixel_labels_dir(project, out)
    if pixel_dir.is_dir():          # corrections removed since the last attempt must not come back
        for stale in pixel_dir.glob("*.png"):
            stale.unlink()
    n_pixel = write_pixel_labels(project, combined, pixel_dir)
    if n_pixel:
        cfg = dataclasses.replace(cfg, pixel_labels=str(pixel_dir))
    record = not project.read_only
    if record:
        project.add_run(out, _summary("running", source_ids, settings, pixel_labels=n_pixel))
    try:
        metrics = yield from relay(pipeline.train_job(project.folder, out, cfg, device=device, cancel=cancel,
                                                      slices=combined.slices, clock=clock))
        studies_report = yield from predict_project(project, out, combined.parts, device, cancel, measure)
    except Cancelled:
        if record:
            project.add_run(out, _summary("cancelled", source_ids, settings, pixel_labels=n_pixel))
        raise
    except Exception as exc:
        if record:
            project.add_run(out, _summary("failed", source_ids, settings, error=str(exc)))
        raise
    metrics = {**(metrics or {}), "studies": studies_report, "skipped": combined.skipped}
    if record:
        seg = metrics.get("segmenter") or {}
        project.add_run(out, _summary("done", source_ids, settings, pixel_labels=n_pixel,
                                      best_val_loss=seg.get("best_val_loss"), seconds=metrics.get("seconds"),
                                      infected_ml={sid: r.get("infected_ml") for sid, r in studies_report.items()}))
    yield Done(metrics)


def predict_project(project, run_dir: str | Path, parts, device: str = "auto", cancel: CancelToken | None = None,
                    measure: bool = True):
    """Generator: every study (StudyPart) predicted with the run, saved at RunFolder.prediction_path (the
    study's own geometry) and, with `measure`, quantified. Returns source id -> report."""
    from .infer.model import load_run_model
    from .infer.predict import predict_masks
    from .results.export import save_prediction
    from .results.quantify import quantify

    lm = load_run_model(run_dir, device)
    if lm.note:                  # the run's ONNX export is not used: why
        yield Message(lm.note, "warning")
    total = sum(p.study.n_slices for p in parts)
    done = 0
    report = {}
    for part in parts:
        study = part.study
        yield Progress("predict", done, total, f"predicting {part.name}")
        mask = yield from predict_masks(lm, study.unit_range(), cancel=cancel, progress_of=(done, total))
        done += study.n_slices
        path = save_prediction(run_dir, part.source_id, mask, study)
        labels = project.counts(part.source_id, study.slice_ids)
        entry = {"name": part.name, "slices": study.n_slices, "labels": labels, "prediction": str(path)}
        if measure:
            quant = quantify(study, mask)
            entry.update(infected_ml=quant["infected_ml"], infected_percent=quant["infected_percent"])
        report[part.source_id] = entry
    return report
