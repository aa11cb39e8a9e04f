"""What `covidseg train` (and the app's Train) asks for: TrainConfig and the --fast preset. Plain data, no torch,
so the app can read the defaults on its GUI thread; pipeline.py runs a TrainConfig."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class TrainConfig:
    """What `covidseg train` asks for. All fields but `device` must match to resume a run."""
    fusion: str = "avg"               # avg | max | none (stage-1 attention fusion)
    size: int | None = 256            # longer side slices are scaled to in both stages (None = native)
    cls_epochs: int = 30
    seg_epochs: int = 40
    seed: int = 0
    model: str = "light"              # see models.segmenter.SEGMENTER_NAMES
    base: int | None = None           # network width (None = the model's default)
    batch_size: int = 8
    lr: float = 1e-3
    val_fraction: float = 0.2
    crop: int | None = None           # train on random crops of this side (cheaper steps); None = whole slices
    steps_per_epoch: int | None = None  # cap on batches per segmenter epoch (large data sets); None = one pass
    pixel_labels: str | None = None   # folder of user masks (PNG 0/255 named as the images)
    fast: bool = False

    def options(self) -> dict:
        opts = dataclasses.asdict(self)
        opts["model_spec"] = self.model_spec()
        return opts

    def model_spec(self) -> dict:
        options = {} if self.base is None else {"base": int(self.base)}
        return {"name": self.model, "in_ch": 1, "options": options}


# The --fast preset: the whole pipeline on the synthetic demo in about a minute on a 2-core CPU. Stage 1 needs
# the demo's native 128 pixels (at 64 its pseudo masks lose most lesions); the segmenter trains on 64-pixel
# crops of them, a quarter of the cost per step, and predicts whole slices.
FAST_PRESET = dict(size=128, cls_epochs=12, seg_epochs=12, base=12, batch_size=4, lr=5e-3, crop=64)


def fast_config(**overrides) -> TrainConfig:
    return TrainConfig(**{**FAST_PRESET, "fast": True, **overrides})
