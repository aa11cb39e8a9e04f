"""Exporting a run's segmenter for ONNX Runtime at the end of training (the runtime side is onnx_engine.py, which
`load_run_model` uses; kept apart so that loading a run never imports the exporter and the two never import each
other)."""
from __future__ import annotations

import logging
import multiprocessing
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write
from ..imaging.resize import resize_stack, working_shape
from ..runs import BEST, RunFolder
from . import onnx_engine
from .model import load_run_model
from .onnx_engine import INPUT, OPSET, OUTPUT, PARITY_MAX_FLIP, parity

log = logging.getLogger(__name__)


def export_onnx(run_dir: str | Path, sample01: np.ndarray) -> dict:
    """Export the run's best.pt to RUN/segmenter.onnx at the working size of `sample01` (n, H, W) in [0, 1] (a
    few of the run's own slices, which the parity check runs on) and write RUN/segmenter.onnx.json. Returns that
    record; never raises for a failed export (status "failed" or "skipped" with the reason, no .onnx kept): a
    run without ONNX predicts with PyTorch."""
    run = RunFolder(run_dir)
    started = time.monotonic()
    for stale in (run.onnx_path, run.onnx_info_path):
        stale.unlink(missing_ok=True)
    if not onnx_engine.onnxruntime_available():
        info = {"status": "skipped", "reason": "onnxruntime is not installed"}
        run.write_json(run.onnx_info_path.name, info)
        return info
    try:
        lm = load_run_model(run.path, "cpu", "fp32", engine="torch")
        model = lm.model.to(memory_format=torch.contiguous_format).float().eval()
        h, w = working_shape(*sample01.shape[1:], lm.size)
        x = resize_stack(torch.from_numpy(np.ascontiguousarray(sample01, np.float32))[:, None], (h, w))
        checkpoint = run.checkpoint_path(BEST)
        digest = onnx_engine.sha256_of(checkpoint)

        def write(tmp: Path) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")       # the TorchScript exporter's deprecation notes
                torch.onnx.export(model, (x[:1],), str(tmp), input_names=[INPUT], output_names=[OUTPUT],
                                  dynamic_axes={INPUT: {0: "n"}, OUTPUT: {0: "n"}}, opset_version=OPSET,
                                  dynamo=False)
        atomic_write(run.onnx_path, write)
        check = parity(onnx_engine.OnnxSegmenter(run.onnx_path, (h, w), torch.get_num_threads()), model, x)
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
    if threading.current_thread() is threading.main_thread():     # the command line: nothing else to wait on it
        info = export_onnx(run.path, images01[pick])
    else:
        info = export_onnx_in_child(run.path, images01[pick])
    if info["status"] == "ok":
        yield Message(f"exported the segmenter for ONNX Runtime ({run.onnx_path.name}; masks differ from "
                      f"PyTorch's in {info['parity']['mask_pixels_differing']:.4%} of the pixels)")
    else:
        yield Message(f"no ONNX export ({info.get('reason')}): predict uses PyTorch", "warning")
    return info


def _export_with_threads(run_dir: str, sample01: np.ndarray, threads: int) -> dict:
    torch.set_num_threads(threads)
    return export_onnx(run_dir, sample01)


def export_onnx_in_child(run_dir: str | Path, sample01: np.ndarray) -> dict:
    """export_onnx in a spawned child process. The TorchScript exporter's graph passes hold Python's GIL for up to
    a second, which froze the app's window at the end of every training (its job runs on a thread beside the GUI's);
    a child process has its own interpreter. Costs a few seconds of start-up; falls back to exporting here when no
    child process can run."""
    threads = torch.get_num_threads()
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(_export_with_threads, str(run_dir), np.ascontiguousarray(sample01), threads).result()
    except Exception:  # noqa: BLE001 - a sandbox without processes, a broken pool: export here, the window waits
        log.warning("ONNX export in a child process failed; exporting in this one", exc_info=True)
        return export_onnx(run_dir, sample01)
