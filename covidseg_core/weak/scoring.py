"""A finished stage 1 applied to any slices: the probability that each shows infection.

The classifier sees what it saw in training (working size, lung field, its margin), read from the run's stage-1
options. The product's slice probability (`slice_probabilities`: what a suggestion tells the radiologist, the
benchmarks' slice AUC) is the mean of the classifier's and the label-free prior's evidence (weak/prior_cue.py) when
the run's `slice_score` says so: the classifier learns the patients it was trained on, the prior never saw a slice
label, and on zenodo-dev's unseen volumes their mean ranks slices better than either (docs/results.md, "Stage 1
classifier")."""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..errors import RunError
from ..imaging.lung_model import compute_lung_fields
from ..imaging.resize import to_shape, to_working_size
from ..infer.device import resolve_device
from ..models.classifier import build_classifier
from ..runs import STAGE1_CONFIG_NAME, RunFolder
from .classifier_training import compute_cams
from .job import classifier_mask
from .prior_cue import prior_slice_evidence

log = logging.getLogger(__name__)


def _stage1(run_dir) -> tuple[RunFolder, dict]:
    run = RunFolder(run_dir)
    options = run.read_json(STAGE1_CONFIG_NAME)
    if options is None or not run.classifier_path.is_file():
        raise RunError(f"Run {run.path} has no finished stage 1 (classifier).", "Train it first.")
    return run, options


def _lung_fields(images01: np.ndarray, options: dict) -> np.ndarray:
    return compute_lung_fields(images01, options.get("lung_method", "model"))[0]


def classifier_probabilities(run_dir, images01: np.ndarray, device: str = "cpu",
                             lungs: np.ndarray | None = None) -> np.ndarray:
    """(n,) infected probabilities of slices (n, H, W) in [0, 1] under the run's classifier alone. `lungs`: their
    lung fields when already computed (found here otherwise, as the run found them)."""
    run, options = _stage1(run_dir)
    state = run.load_classifier()
    model = build_classifier(state["spec"])
    model.load_state_dict(state["model"])
    work = to_working_size(np.asarray(images01, dtype=np.float32), options.get("size"))
    if options.get("mask_input", False):
        lungs = _lung_fields(images01, options) if lungs is None else lungs
        lungs_work = np.stack([to_shape(f.astype(np.uint8), tuple(work.shape[1:]), nearest=True) for f in lungs])
        work = work * classifier_mask(lungs_work.astype(bool))
    probs, _ = compute_cams(model, np.ascontiguousarray(work, dtype=np.float32), torch.device(device))
    return probs


def slice_probabilities(run_dir, images01: np.ndarray, device: str = "cpu") -> np.ndarray:
    """(n,) the run's probability that each slice (n, H, W) in [0, 1] shows infection (see slice_scores)."""
    return slice_scores(run_dir, images01, device)[1]


def slice_scores(run_dir, images01: np.ndarray, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """((n,) the classifier's probabilities, (n,) the run's slice probabilities) of slices (n, H, W) in [0, 1]:
    the latter is the classifier's averaged with the prior's evidence when the run's stage-1 option `slice_score`
    is "classifier+prior" (runs made before the option have the classifier's alone), and the classifier's, with a
    warning, when the prior cannot be read."""
    _, options = _stage1(run_dir)
    lungs = _lung_fields(images01, options)
    probs = classifier_probabilities(run_dir, images01, device, lungs)
    if options.get("slice_score", "classifier") == "classifier":
        return probs, probs
    evidence = prior_slice_evidence(images01, lungs, resolve_device(device))
    if evidence is None:
        log.warning("The label-free prior could not be read: slice probabilities are the classifier's alone.")
        return probs, probs
    return probs, ((probs + evidence) / 2).astype(np.float32)
