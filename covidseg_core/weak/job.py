"""Stage 1 as a job: slice labels -> CAM classifier -> fused CAMs -> pseudo masks, written to a run folder.

What it writes (paths owned by runs.RunFolder): RUN/config.json only when RUN is new (a `covidseg train` run
already has one); RUN/stage1_config.json; RUN/epochs.jsonl, one line per classifier epoch (when this job made
RUN, or when asked to: `train` and `pseudo` do; a re-run replaces the lines of an interrupted attempt);
RUN/classifier.pt after the last epoch; RUN/cams/ (infected slices), RUN/lungs/ and RUN/pseudo/ per labelled
slice (pseudo: 0 background, 255 infection, 127 ignore; clean slices all background; an infected slice's from the
CAM, or from the label-free prior with config.cue "prior", weak/prior_cue.py); RUN/metrics.json with status
"complete", counts, classifier accuracy/AUC and (when ground truth exists) pseudo-mask agreement, or status
"failed"/"cancelled" with the reason.

`size`: slices are processed with their longer side resized to `size` (aspect kept; None = native size, as
in stage 2); CAMs, lung fields and pseudo masks are computed at that size and written at the slice's own size.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from .. import distributed
from ..errors import Cancelled, InputError, TrainingError
from ..events import CancelToken, Done, EpochReport, Message, Progress, relay
from ..imaging.lung_model import compute_lung_fields
from ..imaging.lungs import lung_saliency
from ..imaging.resize import to_shape, to_working_size, upsample_maps
from ..infer.device import resolve_device
from ..results.metrics import summarize
from ..runs import METRICS_NAME, STAGE1_CONFIG_NAME, RunFolder, slice_png_name
from .cam import check_fusion
from .classifier_training import train_classifier
from .config import Stage1Config, check_inputs
from .prior_cue import prior_maps, prior_pseudo_mask
from .pseudo_masks import clean_density_level, clean_pseudo_mask, make_pseudo_mask, to_png_values

log = logging.getLogger(__name__)


def _pick_previews(config: Stage1Config, ids: list[str], infected_idx: np.ndarray) -> list[int]:
    pos = {sid: i for i, sid in enumerate(ids)}
    if config.preview_ids:
        unknown = [p for p in config.preview_ids if p not in pos]
        if unknown:
            raise InputError(f"Preview slices not in the data: {unknown[:3]}.")
        return [pos[p] for p in config.preview_ids]
    k = min(config.n_preview, len(infected_idx))
    if k == 0:
        return []
    return [int(infected_idx[j]) for j in np.linspace(0, len(infected_idx) - 1, k).round().astype(int)]


def _start_run(run: RunFolder, config: Stage1Config, slices, device: torch.device) -> bool:
    """Write the stage-1 config; create RUN/config.json when RUN is new. True when this job owns the run."""
    owns = not run.exists()
    if owns:
        run.create({"stage": "pseudo", **config.to_dict()},
                   {"n_slices": len(slices), "shape": list(slices.images.shape[1:]), "labels": slices.counts()},
                   str(device))
    run.write_json(STAGE1_CONFIG_NAME, {"device": str(device), **config.to_dict()})
    if owns:
        run.forget_epochs()
    return owns


def run_stage1(slices, out_dir: Path, config: Stage1Config, cancel: CancelToken | None = None,
               log_epochs: bool | None = None):
    """Generator job: yields Message / Progress / EpochReport and ends with Done(result=metrics dict).

    `log_epochs`: write the classifier's epochs to RUN/epochs.jsonl (default: when this job creates RUN), in place
    of those an earlier, interrupted attempt wrote.
    Raises LabelError (too few labels), InputError (unusable images or options), TrainingError (NaN loss) and
    Cancelled; in those cases RUN/metrics.json says status "failed" or "cancelled" and why.
    """
    config = dataclasses.replace(config, fusion=check_fusion(config.fusion))
    cancel = cancel or CancelToken()
    run = RunFolder(out_dir)
    check_inputs(slices, config)
    device = resolve_device(config.device)
    started = time.monotonic()
    with distributed.writer_first():     # under torchrun the other ranks find the run rank 0 made
        owns = _start_run(run, config, slices, device)
    log_epochs = owns if log_epochs is None else log_epochs
    if log_epochs:
        # stage 1 keeps no checkpoint mid-way: a re-run starts it over, so the epochs an interrupted attempt
        # logged are dropped (as seg/training.py drops the segmenter's past the checkpoint it resumes from)
        run.drop_epochs_after("classifier", 0)
    try:
        result = yield from _run(slices, run, config, cancel, device, log_epochs, started)
    except Cancelled as exc:
        run.write_json(METRICS_NAME, {"status": "cancelled", "reason": str(exc)}, check_intact=False)
        raise
    except (TrainingError, InputError) as exc:
        run.write_json(METRICS_NAME, {"status": "failed", "reason": str(exc), "error": type(exc).__name__},
                       check_intact=False)
        raise
    run.write_json(METRICS_NAME, result, check_intact=False)
    yield Done(result=result)


def _run(slices, run: RunFolder, config: Stage1Config, cancel: CancelToken, device: torch.device,
         log_epochs: bool, started: float):
    yield Message(f"stage 1 on {device}: {slices.counts()}")
    infected_idx = slices.indices("infected")
    previews = _pick_previews(config, slices.ids, infected_idx)
    yield Progress("lungs", 0, 1, "lung fields")
    lungs, warning = labelled_lung_fields(slices, config.lung_method)
    if warning:
        yield Message(warning, "warning")
    work, lungs_work, seen = classifier_inputs(slices.images, lungs, config.size, config.mask_input)
    yield Progress("lungs", 1, 1, "lung fields")

    def log_epoch(event) -> None:
        if isinstance(event, EpochReport) and log_epochs:
            run.append_epoch_report(event)
    model, bank, history = yield from relay(
        train_classifier(seen, slices.labels, config, device, cancel, track_idx=infected_idx,
                         preview_idx=previews, ids=slices.ids, out_shape=tuple(slices.images.shape[1:])),
        log_epoch)
    run.save_classifier({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                         "spec": model.spec, "size": config.size, "epoch": int(config.cls_epochs)})
    counts = yield from _write_pseudo_masks(slices, run, config, work, lungs, lungs_work,
                                            bank.fused(config.fusion), cancel)
    last = history[-1] if history else {}
    return {"status": "complete", "device": str(device), "fusion": config.fusion,
            "seconds": round(time.monotonic() - started, 2),
            "counts": {**slices.counts(), "pseudo_masks": counts["pseudo_masks"],
                       "fused_slices": int((bank.count > 0).sum()),
                       "foreground_pixels": counts["foreground_pixels"], "ignore_pixels": counts["ignore_pixels"]},
            "classifier": {"train_accuracy": last.get("accuracy"), "train_auc": last.get("auc"),
                           "epochs": int(config.cls_epochs)},
            "ground_truth_report": pseudo_report(slices, counts["masks"])}


def labelled_lung_fields(slices, method: str) -> tuple[np.ndarray, str | None]:
    """Lung fields (n, H, W) of the labelled slices at their own size (unlabelled: empty), and a warning when
    the learned field fell back to the threshold method."""
    fields = np.zeros(slices.images.shape, dtype=bool)
    labelled = np.flatnonzero([lab is not None for lab in slices.labels])
    warning = None
    if len(labelled):
        fields[labelled], warning = compute_lung_fields(slices.images[labelled], method)
    return fields, warning


def classifier_inputs(images: np.ndarray, lungs: np.ndarray, size, mask_input: bool = True):
    """(the slices at the working size, their lung fields at that size, what the classifier sees: the slices
    outside the dilated lung field blacked out when `mask_input`) from slices and lung fields at their own size."""
    work = to_working_size(images, size)
    lungs_work = np.stack([to_shape(f.astype(np.uint8), tuple(work.shape[1:]), nearest=True) for f in lungs]
                          ).astype(bool) if len(lungs) else np.zeros(work.shape, bool)
    return work, lungs_work, (work * classifier_mask(lungs_work) if mask_input else work)


INPUT_MARGIN_FRAC = 0.03     # the classifier also sees this much (of the short side) around the lung field


def classifier_mask(lungs: np.ndarray) -> np.ndarray:
    """float32 (n, h, w): the lung fields dilated by a small margin (the pleura, a lesion the field cut short).
    Outside it the classifier sees black: the body, the table and the heart are patient features, not lesions,
    and a classifier that saw them learned the patients (unseen-volume AUC 0.57 -> 0.90 on zenodo-dev)."""
    r = max(1, round(INPUT_MARGIN_FRAC * min(lungs.shape[1:])))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return np.stack([cv2.dilate(f.astype(np.uint8), kernel) for f in lungs]).astype(np.float32)


def _write_pseudo_masks(slices, run: RunFolder, config: Stage1Config, work: np.ndarray, lungs: np.ndarray,
                        lungs_work: np.ndarray, fused: np.ndarray, cancel: CancelToken):
    """Generator: the pseudo mask and lung field of every labelled slice (and the CAM of the infected ones),
    computed at the working size and written at the slice's own size. Returns counts and the masks.
    Under torchrun each rank computes every N-th slice and sends its PNGs to rank 0, which writes them all."""
    native = tuple(slices.images.shape[1:])
    work_shape = tuple(work.shape[1:])
    infected_idx = slices.indices("infected")
    masks, theirs = {}, {}
    everything = list(infected_idx) + list(slices.indices("clean"))
    todo = distributed.my_share(everything)
    prior = None
    if config.cue == "prior":
        mine = [i for i in todo if slices.labels[i] == "infected"]
        maps, note = prior_maps(slices.images[mine], resolve_device(config.device))
        yield Message(note, "warning" if maps is None else "info")
        prior = None if maps is None else dict(zip(mine, maps))
    # the study's healthy-lung density level is a CAM-mask cue only
    levels = study_clean_levels(slices, work, lungs_work, config) if prior is None else {}
    for step, i in enumerate(todo):
        if step % 16 == 0:
            cancel.raise_if_cancelled()
            yield Progress("pseudo", step, len(todo))
        name = slice_png_name(slices.ids[i])
        pngs = []
        if slices.labels[i] == "infected":
            k = int(np.searchsorted(infected_idx, i))
            cam = upsample_maps(fused[k], work_shape)
            lung = lungs_work[i]
            if prior is None:
                mask = cam_pseudo_mask(work[i], cam, lung, config, levels, slices.groups[i])
            else:          # at the slice's own size, where the prior predicted and the lung field was found
                mask = prior_pseudo_mask(prior[i], lungs[i], config.min_component_frac)
            pngs.append((run.cams_dir / name, np.round(to_shape(cam, native, nearest=False) * 255).astype(np.uint8)))
        else:
            mask = clean_pseudo_mask(work_shape)
        if config.write_lungs:
            pngs.append((run.lungs_dir / name, lungs[i].astype(np.uint8) * 255))
        mask = to_shape(mask, native, nearest=True)
        masks[i] = mask
        pngs.append((run.pseudo_dir / name, to_png_values(mask)))
        if distributed.is_writer():
            _write_pngs(run, pngs)
        else:
            theirs[i] = (pngs, mask)
    for part in distributed.gather_to_writer(theirs)[1:]:
        for i, (pngs, mask) in part.items():
            _write_pngs(run, pngs)
            masks[i] = mask
    yield Progress("pseudo", len(todo), len(todo))
    n_fg = sum(int((m == 1).sum()) for m in masks.values())
    n_ignore = sum(int((m == 255).sum()) for m in masks.values())
    return {"pseudo_masks": len(everything), "foreground_pixels": n_fg, "ignore_pixels": n_ignore, "masks": masks}


def cam_pseudo_mask(image: np.ndarray, cam: np.ndarray, lung: np.ndarray, config: Stage1Config, levels: dict,
                    group) -> np.ndarray:
    """The CAM pseudo mask of an infected slice at the working size (the paper's cue): its fused CAM with the
    lung's density saliency, measured against its study's healthy-lung level (study_clean_levels)."""
    return make_pseudo_mask(image, cam, lung, config, saliency=lung_saliency(image, lung),
                            clean_level=levels.get(group, levels.get(None)))


def _write_pngs(run: RunFolder, pngs: list) -> None:
    for path, array in pngs:
        run.write_png(path, array)


def study_clean_levels(slices, work: np.ndarray, lungs_work: np.ndarray, config: Stage1Config) -> dict:
    """Per study (slice group): the healthy-lung density level from its `clean` slices
    (pseudo_masks.clean_density_level at config.clean_quantile); key None: the level of all clean slices together,
    for a study that has none of its own. Empty when the option is off."""
    if config.clean_quantile is None:
        return {}
    sal, lungs, groups = [], [], []
    for i in slices.indices("clean"):
        sal.append(lung_saliency(work[i], lungs_work[i]))
        lungs.append(lungs_work[i])
        groups.append(slices.groups[i])
    levels = {g: clean_density_level([s for s, h in zip(sal, groups) if h == g],
                                     [m for m, h in zip(lungs, groups) if h == g], config.clean_quantile)
              for g in set(groups)}
    levels[None] = clean_density_level(sal, lungs, config.clean_quantile)
    return {g: v for g, v in levels.items() if v is not None}


def pseudo_report(slices, pseudo: dict[int, np.ndarray]) -> dict | None:
    """Reporting only: agreement of the pseudo masks' foreground with ground truth, over infected slices."""
    if slices.gt_masks is None:
        return None
    has = slices.has_gt if slices.has_gt is not None else np.ones(len(slices), bool)
    idx = [i for i in pseudo if has[i] and slices.labels[i] == "infected"]
    if not idx:
        return None
    report = summarize([pseudo[i] == 1 for i in idx], [slices.gt_masks[i] > 0 for i in idx])
    report["note"] = "pseudo-mask foreground vs ground truth on infected slices; ignore counts as not infection"
    return report
