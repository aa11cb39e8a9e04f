"""The shipped label-free prior (seg/prior.py) as a model ready to predict, whatever a run's size and network:
stage 1 runs it on the infected slices for their pseudo masks (weak/prior_cue.py)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..models.segmenter import build_from_spec
from ..seg.prior import default_prior_path, read_prior
from .model import LoadedModel


def load_prior_model(device: torch.device, path: Path | None = None) -> tuple[LoadedModel | None, str]:
    """(the prior at the working size it was trained at, in full precision; or None when the file is missing or
    damaged) and a note naming it or saying why not. `path`: another prior file (benchmarks); default the shipped
    one."""
    path = path or default_prior_path()
    try:
        state, meta = read_prior(path)
        model = build_from_spec(meta["spec"])
        model.load_state_dict(state)
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        return None, f"the label-free prior could not be read ({exc})"
    model.to(device).eval()
    return LoadedModel(model=model, size=int(meta["size"]), device=device, run=path.parent, epoch=0,
                       precision="fp32"), f"the label-free prior ({path.name})"
