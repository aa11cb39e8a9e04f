"""The segmenter on ONNX Runtime's CPU provider: exported at the end of training, used by `predict` on the CPU.

Export (`export_onnx`): the run's best.pt, in fp32 on the CPU, traced at the run's working slice size with a free
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
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write
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


def _sha256(path: Path) -> str:
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
    flips = float(((ref >= 0.5) != (got >= 0.5)).mean())
    return {"slices": int(x.shape[0]), "mask_pixels_differing": flips,
            "max_probability_difference": float(np.abs(ref - got).max())}


def export_onnx(run_dir: str | Path, sample01: np.ndarray) -> dict:
    """Export the run's best.pt to RUN/segmenter.onnx at the working size of `sample01` (n, H, W) in [0, 1] (a
    few of the run's own slices, which the parity check runs on) and write RUN/segmenter.onnx.json. Returns that
    record; never raises for a failed export (status "failed" or "skipped" with the reason, no .onnx kept): a
    run without ONNX predicts with PyTorch."""
    from ..imaging.resize import resize_stack, working_shape
    from .model import load_run_model

    run = RunFolder(run_dir)
    started = time.monotonic()
    for stale in (run.onnx_path, run.onnx_info_path):
        stale.unlink(missing_ok=True)
    if not onnxruntime_available():
        info = {"status": "skipped", "reason": "onnxruntime is not installed"}
        run.write_json(run.onnx_info_path.name, info)
        return info
    try:
        lm = load_run_model(run.path, "cpu", "fp32", engine="torch")
        model = lm.model.to(memory_format=torch.contiguous_format).float().eval()
        h, w = working_shape(*sample01.shape[1:], lm.size)
        x = resize_stack(torch.from_numpy(np.ascontiguousarray(sample01, np.float32))[:, None], (h, w))
        checkpoint = run.checkpoint_path(BEST)
        digest = _sha256(checkpoint)

        def write(tmp: Path) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")       # the TorchScript exporter's deprecation notes
                torch.onnx.export(model, (x[:1],), str(tmp), input_names=[INPUT], output_names=[OUTPUT],
                                  dynamic_axes={INPUT: {0: "n"}, OUTPUT: {0: "n"}}, opset_version=OPSET,
                                  dynamo=False)
        atomic_write(run.onnx_path, write)
        check = parity(OnnxSegmenter(run.onnx_path, (h, w), torch.get_num_threads()), model, x)
    except Exception as exc:  # noqa: BLE001 - an exporter or runtime that cannot do this network: PyTorch predicts
        log.warning("ONNX export of %s failed", run.path, exc_info=True)
        run.onnx_path.unlink(missing_ok=True)
        first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
        info = {"status": "failed", "reason": f"{type(exc).__name__}: {first_line}"}
        run.write_json(run.onnx_info_path.name, info)
        return info
    ok = check["mask_pixels_differing"] <= PARITY_MAX_FLIP
    info = {"status": "ok" if ok else "failed", "input_hw": [h, w], "opset": OPSET, "torch": torch.__version__,
            "checkpoint": f"checkpoints/{BEST}", "checkpoint_sha256": digest, "epoch": lm.epoch,
            "parity": {**check, "max_allowed": PARITY_MAX_FLIP}, "seconds": round(time.monotonic() - started, 1)}
    if not ok:
        info["reason"] = (f"ONNX Runtime's masks differ from PyTorch's in {check['mask_pixels_differing']:.4%} "
                          f"of the pixels (at most {PARITY_MAX_FLIP:.1%} allowed)")
        run.onnx_path.unlink(missing_ok=True)
    run.write_json(run.onnx_info_path.name, info)
    return info


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
        if _sha256(run.checkpoint_path(BEST)) != info.get("checkpoint_sha256"):
            return None, "the run's ONNX file was exported from another checkpoint: predicting with PyTorch"
        return OnnxSegmenter(run.onnx_path, tuple(info["input_hw"]), threads), None
    except Exception as exc:  # noqa: BLE001 - a damaged file: PyTorch predicts, the user is told
        log.debug("cannot load %s", run.onnx_path, exc_info=True)
        return None, (f"the run's ONNX file cannot be loaded ({type(exc).__name__}): predicting with PyTorch")


PARITY_SLICES = 4


def run_onnx_export(run: RunFolder, images01: np.ndarray, cancel):
    """Generator (the end of a `train` job): the trained segmenter exported for ONNX Runtime, its parity with
    PyTorch checked on a few of the run's own slices spread along the data. Returns the record (status ok, failed
    or skipped); a failed export is a note, not a failed run: predict then uses PyTorch."""
    from ..events import Message, Progress

    cancel.raise_if_cancelled()
    yield Progress("predict", 0, 1, "exporting the network for ONNX Runtime")
    n = len(images01)
    pick = np.unique(np.linspace(0, n - 1, min(PARITY_SLICES, n)).round().astype(int))
    info = export_onnx(run.path, images01[pick])
    if info["status"] == "ok":
        yield Message(f"exported the segmenter for ONNX Runtime ({run.onnx_path.name}; masks differ from "
                      f"PyTorch's in {info['parity']['mask_pixels_differing']:.4%} of the pixels)")
    else:
        yield Message(f"no ONNX export ({info.get('reason')}): predict uses PyTorch", "warning")
    return info
