"""Where networks run and at what precision: the device, mixed precision for training and for prediction, the
gradient scaler that fp16 needs, and the CPU thread count. Training (train_step.py) and prediction both use it."""
from __future__ import annotations

import os

import torch

from ..errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    """auto -> CUDA when present, else CPU. Asking for CUDA without it is a user error."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda was asked for, but no CUDA GPU is available to PyTorch here.",
                             "Use --device cpu (or auto), or install a CUDA build of PyTorch.")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"Unknown device '{name}'.", "Use auto, cpu or cuda.")


def autocast(device: torch.device):
    """Mixed precision on CUDA (bf16 where supported, else fp16); a no-op context on CPU (training stays fp32)."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return torch.autocast(device_type="cpu", enabled=False)


def needs_grad_scaler(device: torch.device) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 (and fp32 on the CPU) need none. Matches `autocast`."""
    return device.type == "cuda" and not torch.cuda.is_bf16_supported()


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX-512 BF16: oneDNN then runs bf16 convolutions 2-3x faster than fp32."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:       # older/other torch builds: stay in fp32
        return False


def inference_autocast(device: torch.device, precision: str = "auto"):
    """Precision of prediction. auto: CUDA as in training; on a CPU with fast bf16, bf16 (measured on the demo:
    0.05 % of mask pixels flip, Dice within 0.01 of fp32, 2.3x faster); fp32 forces full precision."""
    if precision not in ("auto", "fp32", "bf16"):
        raise InputError(f"Unknown precision '{precision}'.", "Use auto, fp32 or bf16.")
    if device.type == "cuda":
        return autocast(device) if precision != "fp32" else torch.autocast("cuda", enabled=False)
    use_bf16 = precision == "bf16" or (precision == "auto" and cpu_has_fast_bf16())
    return torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=use_bf16)


def configure_cpu_threads() -> int:
    """Use every core for inference unless the user set OMP/torch threads; returns the thread count."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    return torch.get_num_threads()
