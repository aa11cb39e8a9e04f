"""The segmenter on ONNX Runtime's CPU provider: exported at the end of training, used by `predict` on the CPU.

Export (`onnx_export.export_onnx`): the run's best.pt, in fp32 on the CPU, traced at the run's working slice size with a free
batch axis (the network's pad-to-16 and pyramid pooling are fixed by the size, so the graph is exported for one
size: the size the run's own slices are worked at, which is every slice of the same scanner geometry). Then the
parity check: ONNX Runtime and PyTorch on the same slices must give the same masks (at most
PARITY_MAX_FLIP of the pixels flip at the 0.5 threshold), or the file is not kept. RUN/segmenter.onnx.json records
the size, the parity numbers and the SHA-256 of the best.pt it came from.

Use (`open_onnx`): only when that record says the parity check passed and the checkpoint is still the one that was
exported; otherwise, or when onnxruntime is missing or the file cannot be loaded, the caller predicts with
PyTorch and shows the returned note. CUDA always stays on PyTorch.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from ..runs import BEST, RunFolder

log = logging.getLogger(__name__)

OPSET = 17
PARITY_MAX_FLIP = 0.001           # fraction of mask pixels that may differ from PyTorch's (fp32) masks
INPUT, OUTPUT = "image", "logits"


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class OnnxSegmenter:
    """Callable like the torch segmenter on (N, 1, H, W) float32 tensors at its input size; returns logits."""

    def __init__(self, path: Path, input_hw: tuple[int, int], threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_hw = tuple(int(v) for v in input_hw)
        self.path = path

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: arr})[0])


def parity(onnx_model: OnnxSegmenter, model: torch.nn.Module, x: torch.Tensor) -> dict:
    """Masks (sigmoid >= 0.5) of both engines on the same inputs: fraction of pixels that differ, largest
    probability difference."""
    with torch.inference_mode():
        ref = torch.sigmoid(model(x).float()).numpy()
    got = torch.sigmoid(onnx_model(x).float()).numpy()
    return {"slices": int(x.shape[0]), **mask_agreement(ref, got)}


def mask_agreement(ref: np.ndarray, got: np.ndarray) -> dict:
    """How far two engines' probabilities are apart: the fraction of pixels whose mask (>= 0.5) differs and the
    largest probability difference."""
    return {"mask_pixels_differing": float(((ref >= 0.5) != (got >= 0.5)).mean()),
            "max_probability_difference": float(np.abs(ref - got).max())}


def open_onnx(run_dir: str | Path, threads: int) -> tuple[OnnxSegmenter | None, str | None]:
    """The run's ONNX segmenter, or (None, why not) when the run has none, it failed its parity check, the
    checkpoint changed since, onnxruntime is missing, or the file cannot be loaded. (None, None): no ONNX file
    and nothing to say (runs made before the export existed)."""
    run = RunFolder(run_dir)
    info = run.read_json(run.onnx_info_path.name)
    if info is None and not run.onnx_path.is_file():
        return None, None
    if not info or info.get("status") != "ok" or not run.onnx_path.is_file():
        why = (info or {}).get("reason") or "its record is missing or damaged"
        return None, f"the run's ONNX export is not usable ({why}): predicting with PyTorch"
    if not onnxruntime_available():
        return None, "onnxruntime is not installed: predicting with PyTorch (pip install onnxruntime for speed)"
    try:
        if sha256_of(run.checkpoint_path(BEST)) != info.get("checkpoint_sha256"):
            return None, "the run's ONNX file was exported from another checkpoint: predicting with PyTorch"
        return OnnxSegmenter(run.onnx_path, tuple(info["input_hw"]), threads), None
    except Exception as exc:  # noqa: BLE001 - a damaged file: PyTorch predicts, the user is told
        log.debug("cannot load %s", run.onnx_path, exc_info=True)
        return None, (f"the run's ONNX file cannot be loaded ({type(exc).__name__}): predicting with PyTorch")
