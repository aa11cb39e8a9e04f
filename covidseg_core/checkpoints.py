"""Reading a checkpoint file safely: `torch.load(weights_only=True)` (no code in the file runs), then a check that
it holds what the caller expects. Anything else is a RunError that says the run is damaged or of another kind;
PyTorch's own message (which suggests `weights_only=False`, unsafe for a file of unknown origin) is only logged."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from .errors import RunError

log = logging.getLogger(__name__)

CLASSIFIER = "classifier"
SEGMENTER = "segmenter"
_CLASSIFIER_NAMES = ("cam_classifier",)
_WHAT = {CLASSIFIER: "a stage-1 classifier", SEGMENTER: "a segmenter"}


def _kind_of(spec) -> str | None:
    if not isinstance(spec, Mapping):
        return None
    return CLASSIFIER if spec.get("name") in _CLASSIFIER_NAMES else SEGMENTER


def load_checkpoint_file(path: Path, expect: str, map_location: str = "cpu") -> dict:
    """The checkpoint at `path` as a dict with "model" (name -> tensor) and "spec", holding `expect`
    (CLASSIFIER or SEGMENTER); RunError otherwise."""
    import torch

    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:    # torn, foreign or unsafe: every way a file can fail to unpickle
        log.debug("torch.load(%s) failed: %s", path, exc)
        raise RunError(f"Checkpoint {path} cannot be read: it is damaged or not a covidseg checkpoint "
                       f"({type(exc).__name__}).", "The run is damaged; train again into a new folder.") from None
    weights = state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, Mapping) or not weights or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise RunError(f"{path} is not a covidseg checkpoint (it holds no network weights).",
                       "The run is damaged or of another kind; train again into a new folder.")
    kind = _kind_of(state.get("spec"))
    if kind is not None and kind != expect:
        raise RunError(f"{path} holds {_WHAT[kind]}, not {_WHAT[expect]}: the run is of another kind or its "
                       "files were mixed up.", "Point --run at a run folder made by `covidseg train`, or train "
                       "again.")
    return state
