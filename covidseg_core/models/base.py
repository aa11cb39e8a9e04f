"""What every segmentation network here shares: any input size in, a logit map of the same size out.

Four 2x2 poolings need H and W divisible by 16, so the input is padded at the bottom and right (reflected where
the image is large enough, zeros otherwise) and the output cropped back.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import fuse_conv_bn_eval

from ..errors import InputError


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (N, C, H, W) at the bottom/right so H and W are multiples of `multiple`; returns (padded, (H, W))."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x, (h, w)
    # reflect needs the pad to be smaller than the side it mirrors
    mode = "reflect" if pad_h < h and pad_w < w else "constant"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (h, w)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d in an nn.Sequential into that conv's weights, in
    place; the module must be in eval mode (running statistics are used). Returns the module."""
    if module.training:
        raise ValueError("fold_batchnorm needs a module in eval mode")
    for seq in module.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
                seq[i + 1] = nn.Identity()
    return module


class SegmenterBase(nn.Module):
    """Subclasses set `in_ch` and implement `forward_padded` on inputs whose sides are multiples of 16."""

    size_multiple = 16
    in_ch: int

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, H, W) float -> (N, 1, H, W) infection logits."""
        if x.ndim != 4 or x.shape[1] != self.in_ch:
            raise InputError(
                f"The segmenter expects a batch shaped (N, {self.in_ch}, H, W), got {tuple(x.shape)}.",
                "Pass slices as a 4-D tensor with the channel axis second.")
        if x.shape[2] < 1 or x.shape[3] < 1:
            raise InputError(f"The segmenter got an empty image of shape {tuple(x.shape)}.")
        padded, (h, w) = pad_to_multiple(x, self.size_multiple)
        return self.forward_padded(padded)[:, :, :h, :w]

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Infection probabilities (N, 1, H, W) in eval mode; the module's train/eval mode is restored after."""
        was_training = self.training
        self.eval()
        try:
            return torch.sigmoid(self(x))
        finally:
            self.train(was_training)

    def inference_copy(self, channels_last: bool = True) -> "SegmenterBase":
        """A frozen copy for prediction only: eval mode, BatchNorm folded into the convs and, by default,
        channels-last weights: on CPU that pair ran the light net 1.4x faster than eager (paired runs, 512x512,
        one thread; see benchmarks/model_cost.py). Same outputs as `self.eval()` up to float rounding."""
        twin = fold_batchnorm(copy.deepcopy(self).eval())
        twin.requires_grad_(False)
        return twin.to(memory_format=torch.channels_last) if channels_last else twin

    def num_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
