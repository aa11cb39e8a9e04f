"""The synthetic supply of one training run: its study's clean slices, their lung fields, lesion levels
calibrated on its infected slices, and how much of stage 2 it makes up.

`--synthetic auto` mixes the pairs (half of every epoch) with the study's own targets (the pseudo masks the
label-free prior makes of its infected slices, weak/prior_cue.py; the all-background clean slices; the user's
pixel masks); `only` trains on synthetic pairs and clean slices (plus the user's pixel masks), without the pseudo
masks; `off` is the paper's method (CAM pseudo masks). A study
without a usable clean slice falls back to `off` with a note, never an error.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..imaging.lung_model import compute_lung_fields
from ..imaging.resize import working_shape
from ..runs import RunFolder
from .calibrate import calibrated_params
from .source import SyntheticSource

SHARE = {"auto": 0.5, "only": 0.8}    # of each epoch's samples
FEW_CLEAN = 10                         # fewer usable clean slices than this gets a note in the run log
VALIDATION_PAIRS = (16, 64)            # fixed synthetic pairs in the validation set: at least, at most


@dataclass
class Supply:
    source: SyntheticSource | None
    share: float
    n_validation: int
    notes: list[str]
    report: dict


def _lung_fields(run: RunFolder, slices, idx: np.ndarray, method: str) -> tuple[np.ndarray, str | None]:
    """Lung fields of `idx` as stage 1 wrote them (RUN/lungs/), else computed now."""
    shape = tuple(slices.images.shape[1:])
    stored = run.read_slice_maps(run.lungs_dir, [slices.ids[i] for i in idx], shape)
    if stored is not None:
        return stored > 127, None
    return compute_lung_fields(slices.images[idx], method)


def study_supply(slices, run: RunFolder, mode: str, lung_method: str, seed: int, size: int | None,
                 n_val_slices: int) -> Supply:
    """What stage 2 draws from, for --synthetic `mode` (auto | only | off)."""
    if mode == "off":
        return Supply(None, 0.0, 0, [], {"mode": "off"})
    clean = slices.indices("clean")
    if len(clean) == 0:
        note = "no slice is labelled clean: no synthetic lesions this time (trained as with --synthetic off)"
        return Supply(None, 0.0, 0, [note], {"mode": "off", "requested": mode, "clean_slices": 0})
    notes = []
    lungs, warning = _lung_fields(run, slices, clean, lung_method)
    if warning:
        notes.append(warning)
    params, calibration = calibrated_params(*_infected_evidence(run, slices, lung_method))
    shape = tuple(slices.images.shape[1:])
    source = SyntheticSource(slices.images[clean], lungs, params, seed=seed, work_shape=working_shape(*shape, size))
    report = {"mode": mode, "clean_slices": int(len(clean)), "used": len(source), "skipped_no_lung": source.n_skipped,
              "calibration": calibration}
    if len(source) == 0:
        notes.append(f"none of the {len(clean)} clean slices shows enough lung for synthetic lesions: trained as "
                     "with --synthetic off")
        return Supply(None, 0.0, 0, notes, {**report, "mode": "off", "requested": mode})
    if len(source) < FEW_CLEAN:
        notes.append(f"only {len(source)} clean slice(s) with lung were used for synthetic lesions; label more "
                     "clean slices for more variety")
    n_val = int(np.clip(n_val_slices, *VALIDATION_PAIRS))
    return Supply(source, SHARE[mode], n_val, notes, report)


def _infected_evidence(run: RunFolder, slices, lung_method: str):
    """(images, lung fields, fused CAMs in [0, 1]) of the infected slices, for calibration (empty when stage 1
    left no CAMs)."""
    infected = slices.indices("infected")
    shape = tuple(slices.images.shape[1:])
    cams = run.read_slice_maps(run.cams_dir, [slices.ids[i] for i in infected], shape)
    if cams is None or not len(infected):
        empty = np.zeros((0, *shape), dtype=np.float32)
        return empty, empty.astype(bool), empty
    lungs, _ = _lung_fields(run, slices, infected, lung_method)
    return slices.images[infected], lungs, cams.astype(np.float32) / 255.0
