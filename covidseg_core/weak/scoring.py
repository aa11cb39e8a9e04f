"""A finished stage 1's classifier applied to any slices: the probability that each shows infection.

The slices go through what the classifier saw in training (working size, lung field, its margin), read from the
run's stage-1 options. Used by the benchmarks (slice AUC on unseen volumes) and meant for ranking slices to
label next."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import RunError
from ..imaging.lung_model import compute_lung_fields
from ..imaging.resize import to_shape, to_working_size
from ..models.classifier import build_classifier
from ..runs import STAGE1_CONFIG_NAME, RunFolder
from .classifier_training import compute_cams
from .job import classifier_mask


def classifier_probabilities(run_dir, images01: np.ndarray, device: str = "cpu") -> np.ndarray:
    """(n,) infected probabilities of slices (n, H, W) in [0, 1] under the run's classifier."""
    run = RunFolder(run_dir)
    options = run.read_json(STAGE1_CONFIG_NAME)
    if options is None or not run.classifier_path.is_file():
        raise RunError(f"Run {run.path} has no finished stage 1 (classifier).", "Train it first.")
    state = run.load_classifier()
    model = build_classifier(state["spec"])
    model.load_state_dict(state["model"])
    work = to_working_size(np.asarray(images01, dtype=np.float32), options.get("size"))
    if options.get("mask_input", False):
        lungs, _ = compute_lung_fields(images01, options.get("lung_method", "model"))
        lungs_work = np.stack([to_shape(f.astype(np.uint8), tuple(work.shape[1:]), nearest=True) for f in lungs])
        work = work * classifier_mask(lungs_work.astype(bool))
    probs, _ = compute_cams(model, np.ascontiguousarray(work, dtype=np.float32), torch.device(device))
    return probs
