"""What `covidseg train` (and the app's Train) asks for: TrainConfig and the --fast preset. Plain data, no torch,
so the app can read the defaults on its GUI thread; pipeline.py runs a TrainConfig, after the budget planner
(budget.py) has filled in what was left to it (RUN/plan.json)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .budget import AUTO


@dataclass
class TrainConfig:
    """What `covidseg train` asks for. All fields but `data_workers` must match to resume a run. None (and AUTO)
    mean "let the device and the time budget decide" (budget.py); the decisions are recorded in RUN/plan.json."""
    fusion: str = "avg"               # avg | max | none (stage-1 attention fusion)
    size: int | str | None = AUTO     # longer side slices are scaled to in both stages (None = native; AUTO:
    #                                   256, or 128 for a budgeted run on a CPU: budget.working_profile)
    cls_epochs: int | None = None     # None: as the budget allows, or 30 without a budget
    seg_epochs: int | None = None     # None: as the budget allows, or 40 without a budget
    budget_minutes: float | None = None  # None: the device's default (CPU 8 min, CUDA none); 0: fixed schedule
    seed: int = 0
    model: str = "light"              # see models.segmenter.SEGMENTER_NAMES
    base: int | None = None           # network width (None = the model's default; 16 for a budgeted CPU run)
    batch_size: int = 8
    lr: float = 2e-3                  # peak of the warm-up + cosine schedule (zenodo-dev runs: 3e-3 at batch 16)
    val_fraction: float = 0.2
    crop: int | None = None           # train on random crops of this side (cheaper steps); None = whole slices
    steps_per_epoch: int | None = None  # cap on batches per segmenter epoch (large data sets); None = one pass
    pixel_labels: str | None = None   # folder of user masks (PNG 0/255 named as the images)
    synthetic: str = "only"           # only | auto | off: synthetic lesions on clean slices in stage 2 (synth/);
    #                                   "only" measured best on unseen zenodo-dev volumes (docs/results.md)
    lung_method: str = "model"        # model | threshold: how lung fields are found (imaging/lung_model.py)
    init: str = "prior"               # prior: start the segmenter from the label-free prior when it fits the
    #                                   run's network and size (seg/prior.py); none: random weights; or a path
    prior_share: float = 0.25         # of the prior's weights kept in the trained segmenter (seg/prior.py
    #                                   blend_with_start; 0: the fine-tuned weights alone). zenodo-dev: any share
    #                                   >= 0.25 beats none on the training volumes; more marks more of a study's
    #                                   own clean slices (docs/results.md, "Keeping part of the prior")
    fast: bool = False
    data_workers: int | None = None   # processes drawing the synthetic pairs ahead of the steps (synth/workers.py;
    #                                   None: 0 on a CPU, up to 4 on a GPU); never changes what a run learns, so a
    #                                   resumed run may use another number (runs.RESUME_FREE_OPTIONS)

    def options(self) -> dict:
        opts = dataclasses.asdict(self)
        opts["model_spec"] = self.model_spec()
        return opts

    def model_spec(self) -> dict:
        options = {} if self.base is None else {"base": int(self.base)}
        return {"name": self.model, "in_ch": 1, "options": options}


# The --fast preset: the whole pipeline on the synthetic demo in about a minute on a 2-core CPU. It is the CPU
# default's network and size (light, width 16, 128 pixels), so the segmenter starts from the label-free prior and
# fine-tunes it briefly (4 epochs of at most 8 batches of 8 slices): on the demo that scores Dice mean 0.50-0.51
# over three seeds, where the width-12 network trained from scratch on 64-pixel crops gave 0.20-0.45 and marked
# 16-20 of its 20 clean slices (docs/results.md, "The demo"). Both stages' epochs are given, so a budget has
# nothing to size.
FAST_PRESET = dict(size=128, base=16, batch_size=8, cls_epochs=8, seg_epochs=4, steps_per_epoch=8)


def fast_config(**overrides) -> TrainConfig:
    return TrainConfig(**{**FAST_PRESET, "fast": True, **overrides})
