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


QUANT_SUFFIX, SCALE_SUFFIX, ZERO_SUFFIX = ":u8", ":scale", ":zero"


def _quantize(state: dict) -> dict:
    """Conv and linear weights as 8 bits per output channel (a uint8 code and a float16 scale and zero per
    channel), everything else as stored (float tensors as float16): a quarter of the float32 size, so the prior
    ships as a small file. It is a starting point that training moves anyway; the rounding changes a weight by
    at most half a step (1/510 of its channel's range)."""
    import torch

    out = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if v.is_floating_point() and v.dim() >= 2:
            flat = v.float().reshape(v.shape[0], -1)
            lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
            scale = ((hi - lo) / 255).clamp_min(1e-12)
            out[k + QUANT_SUFFIX] = ((flat - lo) / scale).round().clamp(0, 255).to(torch.uint8).reshape(v.shape)
            out[k + SCALE_SUFFIX] = scale.squeeze(1).half()
            out[k + ZERO_SUFFIX] = lo.squeeze(1).half()
        else:
            out[k] = v.half() if v.is_floating_point() else v
    return {k: t.contiguous() for k, t in out.items()}


def _dequantize(stored: dict) -> dict:
    state = {}
    for k, v in stored.items():
        if k.endswith(QUANT_SUFFIX):
            name = k[: -len(QUANT_SUFFIX)]
            shape = (-1,) + (1,) * (v.dim() - 1)
            scale = stored[name + SCALE_SUFFIX].float().reshape(shape)
            zero = stored[name + ZERO_SUFFIX].float().reshape(shape)
            state[name] = v.float() * scale + zero
        elif not (k.endswith(SCALE_SUFFIX) or k.endswith(ZERO_SUFFIX)):
            state[k] = v.float() if v.is_floating_point() else v
    return state


def save_prior(path: Path, state: dict, spec: dict, size: int, info: dict) -> None:
    """Weights (8-bit, see _quantize) + what they are (spec, working size, how they were trained) in one
    safetensors file."""
    from safetensors.torch import save_file

    from ..atomic import atomic_write

    meta = {"arch": ARCH, "spec": json.dumps(spec), "size": str(int(size)), "info": json.dumps(info),
            "weights": "u8-per-channel"}
    tensors = _quantize(state)
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def read_prior(path: Path) -> tuple[dict, dict]:
    """(state dict, metadata with spec/size/info decoded); ValueError for a missing, damaged or foreign file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            stored = {k: fh.get_tensor(k) for k in fh.keys()}
    except (OSError, SafetensorError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if meta.get("arch") != ARCH:
        raise ValueError(f"{path} is not a segmenter prior")
    try:
        decoded = {"spec": json.loads(meta["spec"]), "size": int(meta["size"]), "info": json.loads(meta["info"])}
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path} has damaged metadata ({exc})") from exc
    try:
        state = _dequantize(stored) if meta.get("weights") == "u8-per-channel" else stored
    except (KeyError, RuntimeError) as exc:
        raise ValueError(f"{path} has damaged weights ({exc})") from exc
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


def blend_with_start(weights: dict, start: dict, start_share: float) -> dict:
    """Weights that keep `start_share` of the starting prior's and the rest of the fine-tuned ones, tensor by
    tensor (a weight-space ensemble: Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022). A
    study's few slices pull the fine-tuned network away from what the prior learned from many; on zenodo-dev the
    blend scored above the fine-tuned weights alone, on the training volumes and on unseen ones (docs/results.md).
    Integer buffers (BatchNorm's batch count) stay the fine-tuned ones'."""
    import torch

    if not 0.0 <= start_share <= 1.0:
        raise ValueError(f"start_share must lie in [0, 1], got {start_share}")
    if start_share == 0.0:
        return dict(weights)
    out = {}
    for name, w in weights.items():
        s = start.get(name)
        if s is None or s.shape != w.shape:
            raise ValueError(f"the starting weights do not match the network at {name}")
        out[name] = torch.lerp(w.float(), s.float(), start_share).to(w.dtype) if w.is_floating_point() else w
    return out

