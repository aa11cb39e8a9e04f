"""A run's trained segmenter, loaded and ready to predict."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import RunError
from ..models.segmenter import build_from_spec
from ..runs import BEST, RunFolder
from .device import resolve_device


@dataclass
class LoadedModel:
    model: torch.nn.Module
    size: int | None
    device: torch.device
    run: Path
    epoch: int
    precision: str = "auto"
    lung_method: str | None = None    # predictions are kept inside this lung field (None: runs made before it)
    onnx: Any = None                  # onnx_engine.OnnxSegmenter when ONNX Runtime predicts (CPU, fp32)
    note: str | None = None           # why not, when the run has an ONNX file that is not used

    @property
    def engine(self) -> str:
        return "onnxruntime" if self.onnx is not None else "pytorch"


ENGINES = ("auto", "torch", "onnx")


def load_run_model(run_dir: str | Path, device: str | torch.device = "auto", precision: str = "auto",
                   engine: str = "auto") -> LoadedModel:
    """The best segmenter of a run, ready to predict. RunError for a missing, unfinished or incompatible run.

    engine auto: on the CPU, ONNX Runtime when the run has a usable ONNX export (onnx_engine.py) and bf16 was not
    asked for, else PyTorch (with `note` saying why, when the run has an ONNX file); torch: PyTorch always; onnx:
    like auto. CUDA always runs PyTorch."""
    run = RunFolder(run_dir)
    config = run.read_config()
    state = run.load_checkpoint(BEST)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    spec = state.get("spec") or config["options"].get("model_spec")
    if not spec:
        raise RunError(f"Checkpoint of run {run.path} does not say which network it holds.",
                       "Train again with this version.")
    try:
        model = build_from_spec(spec)
    except (TypeError, ValueError, AttributeError) as exc:   # a spec this version cannot build
        raise RunError(f"The checkpoint of run {run.path} names a network this version cannot build ({exc}).",
                       "The run is damaged or of another kind; train again.") from None
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise RunError(f"The checkpoint of run {run.path} does not fit its network ({str(exc).splitlines()[0]}).",
                       "The run was made by an incompatible version; train again.") from exc
    model.to(dev).eval()
    if dev.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    lm = LoadedModel(model=model, size=run.working_size(config), device=dev, run=run.path,
                     epoch=int(state.get("epoch", 0)), precision=precision,
                     lung_method=config["options"].get("lung_method"))
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}")
    if engine != "torch" and dev.type == "cpu" and precision != "bf16":
        from .onnx_engine import open_onnx

        lm.onnx, lm.note = open_onnx(run.path, torch.get_num_threads())
    return lm


def default_batch_size(device: torch.device, shape: tuple[int, int]) -> int:
    pixels = shape[0] * shape[1]
    budget = 64 * 512 * 512 if device.type == "cuda" else 8 * 256 * 256
    return int(max(1, min(64, budget // max(pixels, 1))))
