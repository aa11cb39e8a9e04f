"""A label-free starting point for the segmenter: weights trained on synthetic lesions only.

`covidseg_core/resources/segmenter_prior.safetensors` holds a light segmenter trained by
scripts/train_synthetic_prior.py on synthetic lesions drawn on zenodo-dev slices labelled `clean` (no infection
mask of any kind; card beside it). A budgeted CPU run cannot afford the thousands of steps a segmenter needs
from scratch (zenodo-dev: ~190 steps in the default 8 minutes), so when the run's network and working size match
the prior's, training starts from it instead of from random weights: the study's own data then adapt a network
that already knows what a lesion in lung looks like. Its metadata names the network (spec) and the working size
it was trained at; anything else, a missing or damaged file included, means "start from scratch" with a note.
"""
from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

PRIOR_NAME = "segmenter_prior.safetensors"
ARCH = "covidseg-segmenter-prior"
SIZE_TOLERANCE = 0.25       # working sizes within 25 % of the prior's see lesions at about the same scale


def default_prior_path() -> Path:
    return Path(str(resources.files("covidseg_core") / "resources" / PRIOR_NAME))


def save_prior(path: Path, state: dict, spec: dict, size: int, info: dict) -> None:
    """Weights + what they are (spec, working size, how they were trained) in one safetensors file."""
    from safetensors.torch import save_file

    from ..atomic import atomic_write

    meta = {"arch": ARCH, "spec": json.dumps(spec), "size": str(int(size)), "info": json.dumps(info)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def read_prior(path: Path) -> tuple[dict, dict]:
    """(state dict, metadata with spec/size/info decoded); ValueError for a missing, damaged or foreign file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (OSError, SafetensorError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if meta.get("arch") != ARCH:
        raise ValueError(f"{path} is not a segmenter prior")
    try:
        decoded = {"spec": json.loads(meta["spec"]), "size": int(meta["size"]), "info": json.loads(meta["info"])}
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path} has damaged metadata ({exc})") from exc
    return state, decoded


def matching_prior(spec: dict, size: int | None, path: Path | None = None) -> tuple[dict | None, str]:
    """(state dict or None, a note saying which start was taken and why) for a run with network `spec` at
    working size `size`."""
    path = Path(path) if path is not None else default_prior_path()
    if not path.is_file():
        return None, f"no segmenter prior at {path}: the segmenter starts from random weights"
    try:
        state, meta = read_prior(path)
    except ValueError as exc:
        log.warning("%s", exc)
        return None, f"the segmenter prior could not be read ({exc}): the segmenter starts from random weights"
    if meta["spec"] != spec:
        return None, "the segmenter prior is another network than this run's: random start"
    if not size or abs(size - meta["size"]) > SIZE_TOLERANCE * meta["size"]:
        return None, (f"the segmenter prior was trained at size {meta['size']}, this run works at {size}: "
                      "random start")
    return state, f"the segmenter starts from the label-free prior ({path.name}, size {meta['size']})"

