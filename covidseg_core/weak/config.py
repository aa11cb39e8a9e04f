"""Stage-1 options and the checks its inputs must pass before any training starts."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, LabelError
from ..constants import LUNG_METHODS, PSEUDO_CUES, SLICE_SCORES
from .cam import check_fusion
from .pseudo_masks import PseudoMaskParams

MIN_PER_CLASS = 2        # labelled slices needed of each class, at the very least


@dataclass
class Stage1Config(PseudoMaskParams):
    fusion: str = "avg"               # avg | max | none
    device: str = "auto"              # auto | cpu | cuda
    size: int | None = None           # longer side in pixels; None = native size
    cls_epochs: int = 8               # what the zenodo-dev benchmark measured
    seed: int = 0
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 16                   # channels of the classifier's first layer (16: unseen-volume AUC 0.90 vs
                                      # 0.76 at 8, zenodo-dev, lung-masked input; docs/results.md)
    lung_method: str = "model"        # lung field: "model" (learned, imaging/lung_model.py) or "threshold"
    mask_input: bool = True           # the classifier sees the (slightly dilated) lung field only
    preview_ids: list[str] = field(default_factory=list)   # slices whose maps each EpochReport carries
    n_preview: int = 4                # when preview_ids is empty: this many infected slices, evenly spread
    write_lungs: bool = True
    cue: str = "cam"                  # what makes an infected slice's pseudo mask: "cam" (fused CAM + density, the
                                      # paper's method) or "prior" (the label-free prior, weak/prior_cue.py)
    slice_score: str = "classifier+prior"   # a slice's probability of infection: the classifier's alone, or its
                                            # mean with the prior's evidence (weak/scoring.py)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_inputs(slices, config: Stage1Config) -> None:
    check_fusion(config.fusion)
    if config.cue not in PSEUDO_CUES:
        raise InputError(f"Unknown pseudo-mask cue '{config.cue}'.", f"Use {' or '.join(PSEUDO_CUES)}.")
    if config.slice_score not in SLICE_SCORES:
        raise InputError(f"Unknown slice score '{config.slice_score}'.", f"Use {' or '.join(SLICE_SCORES)}.")
    if config.lung_method not in LUNG_METHODS:
        raise InputError(f"Unknown lung-field method '{config.lung_method}'.", f"Use {' or '.join(LUNG_METHODS)}.")
    if config.clean_quantile is not None and not 0.0 < float(config.clean_quantile) < 1.0:
        raise InputError(f"clean_quantile {config.clean_quantile} must lie between 0 and 1 (or be None: off).")
    if not 0.0 <= float(config.min_component_frac) < 1.0:
        raise InputError(f"min_component_frac {config.min_component_frac} must lie in [0, 1).")
    if config.cls_epochs < 1:
        raise InputError("--cls-epochs must be at least 1.")
    if config.size is not None and int(config.size) < 32:
        raise InputError(f"--size {config.size} is too small.", "Use at least 32 pixels, or leave it out.")
    if len(slices) == 0:
        raise InputError("The data set holds no slices.")
    counts = slices.counts()
    if counts["infected"] < MIN_PER_CLASS or counts["clean"] < MIN_PER_CLASS:
        raise LabelError(f"Stage 1 needs at least {MIN_PER_CLASS} slices labelled 'infected' and {MIN_PER_CLASS} "
                         f"labelled 'clean'; found {counts['infected']} infected and {counts['clean']} clean.",
                         "Label more slices of each kind (a few dozen of each works much better).")
    imgs = slices.images
    if not np.isfinite(imgs).all():
        raise InputError("Some slices contain NaN or infinite values.", "Check the source images.")
    labelled = np.array([lab is not None for lab in slices.labels])
    sub = imgs[labelled]
    if float(np.ptp(sub)) == 0.0 or bool(np.all(sub == sub[:1])):
        raise InputError("All labelled slices are identical images; there is nothing to learn from.",
                         "Check that the right images were loaded.")
