"""One optimisation step, shared by the classifier (weak/) and the segmenter (seg/) training loops.

A `TrainStep` owns what both loops used to write out twice: augmenting a batch, moving it to the device, the
forward pass under mixed precision (infer/device.py), the loss in fp32, the non-finite-loss check, gradient
scaling (fp16 only), the optimizer step and an optional per-step LR scheduler. New training options (another
augmentation, an LR schedule, gradient clipping, AMP settings) belong here, so both stages get them alike.
It lives below weak/ and seg/ because both use it and neither may import the other.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .errors import TrainingError
from .infer.device import autocast, needs_grad_scaler

# (x, y, rng) -> (x, y): runs on the CPU batch before it moves to the device
Augment = Callable[[torch.Tensor, torch.Tensor, Any], tuple[torch.Tensor, torch.Tensor]]
# (fp32 output, y on the device) -> scalar loss
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TrainStep:
    """`step(x, y, rng=..., where=...)` trains `model` on one batch and returns the batch's loss as a float.

    `what` names the network in the error raised on a non-finite loss ("The classifier's loss became nan at
    epoch 3, batch 2."), `hint` says what to do about it.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 loss_fn: LossFn, *, augment: Augment | None = None, scheduler=None,
                 what: str = "network", hint: str = "Lower the learning rate, or check the images."):
        self.model = model
        self.optimizer = optimizer
        self.device = device
        self.loss_fn = loss_fn
        self.augment = augment
        self.scheduler = scheduler
        self.what = what
        self.hint = hint
        self.scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(device))

    @property
    def scales_gradients(self) -> bool:
        return self.scaler.is_enabled()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, *, rng: Any = None, where: str = "") -> float:
        if self.augment is not None:
            x, y = self.augment(x, y, rng)
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        with autocast(self.device):
            out = self.model(x)
        loss = self.loss_fn(out.float(), y)
        if not torch.isfinite(loss):
            raise TrainingError(f"The {self.what}'s loss became {float(loss.detach())}{' ' + where if where else ''}.",
                                self.hint)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return float(loss.detach())

    # resume: the scaler's state travels with the optimizer's in a checkpoint
    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scales_gradients else {}

    def load_state_dict(self, state: dict | None) -> None:
        if state and self.scales_gradients:
            self.scaler.load_state_dict(state)


def warmup_cosine(total_steps: int, warmup_fraction: float = 0.05) -> Callable[[int], float]:
    """LR factor of step s (0-based) for torch's LambdaLR: linear warm-up over `warmup_fraction` of the steps
    (at least one), then cosine decay to ~0 at `total_steps`. A function of the step alone, so a resumed run
    that knows how many steps were done continues the same schedule."""
    total = max(1, int(total_steps))
    warm = max(1, round(warmup_fraction * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor
