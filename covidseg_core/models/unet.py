"""The standard U-Net (Ronneberger et al. 2015) with BatchNorm, for the parameter/speed/Dice comparison.

Double 3x3 conv + BN + ReLU per level, widths 64-128-256-512-1024, 2x2 max-pool down, 2x2 transposed conv up
(about 31.0M parameters at base 64). Same-padded convs and the shared pad-and-crop, so any input size works.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegmenterBase
from .blocks import ConvBlock


class UNet(SegmenterBase):
    def __init__(self, in_ch: int = 1, base: int = 64, *, bilinear: bool = False):
        super().__init__()
        self.in_ch = in_ch
        widths = [base, base * 2, base * 4, base * 8, base * 16]
        self.encoder = nn.ModuleList()
        prev = in_ch
        for width in widths:
            self.encoder.append(ConvBlock(prev, width, plain=True))
            prev = width
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.ups.append(
                nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                              nn.Conv2d(width * 2, width, 1)) if bilinear
                else nn.ConvTranspose2d(width * 2, width, 2, stride=2))
            self.decoder.append(ConvBlock(width * 2, width, plain=True))
        self.head = nn.Conv2d(base, 1, 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, level in enumerate(self.encoder):
            if i:
                x = F.max_pool2d(x, 2)
            x = level(x)
            skips.append(x)
        skips.pop()  # the bottleneck output is not a skip
        for up, block, skip in zip(self.ups, self.decoder, reversed(skips)):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)
