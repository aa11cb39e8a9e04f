"""Training on a whole project: every study's labels and corrections in one run (pipeline.train_job on the
combined slices of project/studies.py), then every study predicted with it (saved in the run, where export and
the app find it) and measured. The run is recorded in the project with the studies it trained on, so each study
knows its training status.

The validation split is by study when the project has several (their slices are grouped by study), by blocks of
neighbouring slices when it has one (seg/targets.split_validation).

Under torchrun (docs/distributed.md) every rank trains on the combined slices: rank 0 reads the studies, and the
other ranks map its slices from the slice cache (or read the studies themselves without one); rank 0 alone
writes: the pixel labels, the project's record of the run, the run folder, and the predictions after training.
The other ranks open the project read-only (`open_for_training`) and never write into it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import time
from pathlib import Path

from . import distributed
from .data import data_fingerprint
from .errors import Cancelled, InputError
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
                      measure: bool = True, clock=time.monotonic, cache_dir=None):
    """Generator job: stage 1 and stage 2 on every study of `project`, into run folder `out` (resumable like
    pipeline.train_job), then each study predicted, saved in the run and (with `measure`) quantified.
    Ends with Done(metrics), where metrics["studies"] maps source id -> name, slices, labels, infected volume.
    `studies` may pass studies already read (source id -> Study). `cache_dir`: the slice cache through which
    the ranks of a torchrun job share the studies that rank 0 reads (project/studies.open_source)."""
    from . import pipeline

    cfg = cfg or TrainConfig()
    cancel = cancel or CancelToken()
    out = Path(out)
    yield Message(f"reading the {len(project.sources)} studies of the project")
    combined = project_slices(project, studies, cache_dir=cache_dir)
    for note in combined.skipped:
        yield Message(note, "warning")
    check_labelled(combined)
    source_ids = [p.source_id for p in combined.parts]
    pixel_dir = pixel_labels_dir(project, out)
    n_pixel = _pixel_labels(project, combined, pixel_dir)
    if n_pixel:
        cfg = dataclasses.replace(cfg, pixel_labels=str(pixel_dir))
    record = not project.read_only
    if record:
        project.add_run(out, _summary("running", source_ids, settings, pixel_labels=n_pixel))
    try:
        metrics = yield from relay(pipeline.train_job(project.folder, out, cfg, device=device, cancel=cancel,
                                                      slices=combined.slices, clock=clock))
        studies_report = {}
        if distributed.is_writer():    # the run rank 0 wrote, predicted once; the other ranks are done
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


@contextlib.contextmanager
def open_for_training(folder: str | Path):
    """`with open_for_training(P) as project:` the project a `train --project` process trains on: opened to
    write (locked) by rank 0 or the one process; under torchrun read-only by the other ranks, once rank 0 has
    opened it (its open may fold the journal into project.json, which a reader at that moment could miss)."""
    from .project.api import Project

    with distributed.writer_first():
        project = Project.open(folder, read_only=not distributed.is_writer())
    with project:
        yield project


def _pixel_labels(project, combined, folder: Path) -> int:
    """Rank 0 (or the one process) writes the corrections into `folder`; how many. Under torchrun the other ranks
    wait here for rank 0's count (they read the folder in stage 2), and every rank stops, before anything is
    recorded, when one read other slices or labels than rank 0 (their batches would no longer match)."""
    n = None
    if distributed.is_writer():
        if folder.is_dir():          # corrections removed since the last attempt must not come back
            for stale in folder.glob("*.png"):
                stale.unlink()
        n = write_pixel_labels(project, combined, folder)
    if not distributed.active():
        return n
    prints = distributed.gather_to_writer(data_fingerprint(combined.slices))
    n, differ = distributed.broadcast((n, [r for r, fp in enumerate(prints) if fp != prints[0]]))
    if differ:
        raise InputError(f"rank(s) {', '.join(map(str, differ))} read other slices or labels in the project's "
                         "studies than rank 0.", "Put the project and its studies where every node sees them "
                         "at the same paths, then run the command again.")
    return n


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
