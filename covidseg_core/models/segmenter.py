"""The lightweight segmentation network of METHOD.md Stage 2, its ablation variants, and `build_segmenter`.

Shape of LightUNet with base width b (the default b=24 gives 1,147,355 parameters, pinned in a test;
the standard U-Net has 27x more):

    level 1-4 encoder: FE block (or conv block) -> channel attention -> skip, then 2x2 max-pool
                       widths b, 2b, 4b, 8b
    level 5:           MDPPM (or ASPP, or nothing) at 8b -> conv block to 16b
    decoder 4-1:       bilinear x2 -> pointwise conv halving channels -> concat skip -> conv block
    skips ("RC"):      4, 3, 2, 1 inverted-residual blocks from the top skip to the bottom one
    head:              1x1 conv -> one infection logit per pixel
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegmenterBase
from .blocks import (ASPP, MDPPM, ChannelAttention, ConvBlock, FEBlock, InvertedResidual,
                     conv_bn_relu)

Bottleneck = Literal["mdppm", "aspp", "none"]

# inverted-residual blocks on the skip paths, top (full resolution) to bottom
RC_DEPTHS = (4, 3, 2, 1)


class _Up(nn.Module):
    """Bilinear x2 upsampling, then a pointwise conv that halves the channels."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.proj = conv_bn_relu(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class LightUNet(SegmenterBase):
    """Lightweight U-Net with FE blocks, channel attention, MDPPM and residual-connection skips.

    fe=False uses a conv block instead of the FE block, rc=False copies skips straight across,
    bottleneck picks MDPPM / ASPP / nothing before the level-5 conv block, plain=True makes every conv block
    standard 3x3 convs (not used by the paper's ablation; kept to measure what depthwise separability costs).
    """

    def __init__(self, in_ch: int = 1, base: int = 24, *, fe: bool = True, rc: bool = True,
                 bottleneck: Bottleneck = "mdppm", plain: bool = False, rc_expansion: int = 2,
                 attention_reduction: int = 8):
        super().__init__()
        if bottleneck not in ("mdppm", "aspp", "none"):
            raise ValueError(f"bottleneck must be 'mdppm', 'aspp' or 'none', not {bottleneck!r}")
        self.in_ch = in_ch
        widths = [base, base * 2, base * 4, base * 8]

        self.encoder = nn.ModuleList()
        prev = in_ch
        for level, width in enumerate(widths):
            # a depthwise conv on few input channels has too few filters: give level 1 one per output channel
            mult = max(1, width // prev) if level == 0 else 1
            block = (FEBlock(prev, width, depth_multiplier=mult) if fe
                     else ConvBlock(prev, width, plain=plain, depth_multiplier=mult))
            self.encoder.append(nn.Sequential(block, ChannelAttention(width, attention_reduction)))
            prev = width

        deep = widths[-1]
        if bottleneck == "mdppm":
            context: nn.Module = MDPPM(deep, deep)
        elif bottleneck == "aspp":
            context = ASPP(deep, deep)
        else:
            context = nn.Identity()
        self.bottleneck = nn.Sequential(context, ConvBlock(deep, deep * 2, plain=plain))

        self.skips = nn.ModuleList(
            nn.Sequential(*(InvertedResidual(width, rc_expansion) for _ in range(depth))) if rc
            else nn.Identity()
            for width, depth in zip(widths, RC_DEPTHS))

        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(widths):
            self.ups.append(_Up(width * 2, width))
            self.decoder.append(ConvBlock(width * 2, width, plain=plain))
        self.head = nn.Conv2d(base, 1, 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, skip_path in zip(self.encoder, self.skips):
            x = level(x)
            skips.append(skip_path(x))
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.ups, self.decoder, reversed(skips)):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


# name -> LightUNet options. The paper's ablation baseline is its network without FE (conv block instead),
# without RC and without MDPPM; its conv blocks stay depthwise separable.
VARIANTS: dict[str, dict] = {
    "light": dict(fe=True, rc=True, bottleneck="mdppm"),
    "baseline": dict(fe=False, rc=False, bottleneck="none"),
    "fe": dict(fe=True, rc=False, bottleneck="none"),
    "fe_rc": dict(fe=True, rc=True, bottleneck="none"),
    "fe_rc_mdppm": dict(fe=True, rc=True, bottleneck="mdppm"),
    "fe_rc_aspp": dict(fe=True, rc=True, bottleneck="aspp"),
}
SEGMENTER_NAMES = ("light", "unet", "baseline", "fe", "fe_rc", "fe_rc_mdppm", "fe_rc_aspp")


def build_segmenter(name: str = "light", in_ch: int = 1, **options) -> SegmenterBase:
    """A fresh, randomly initialised segmenter by name (see SEGMENTER_NAMES); `options` go to its constructor."""
    if name == "unet":
        from .unet import UNet
        return UNet(in_ch=in_ch, **options)
    if name not in VARIANTS:
        raise ValueError(f"Unknown segmenter {name!r}; choose one of {', '.join(SEGMENTER_NAMES)}.")
    return LightUNet(in_ch=in_ch, **{**VARIANTS[name], **options})


def build_from_spec(spec: dict) -> SegmenterBase:
    """A fresh segmenter from the spec a run records (`{"name", "in_ch", "options"}`, see train_config.TrainConfig)."""
    return build_segmenter(spec.get("name", "light"), in_ch=int(spec.get("in_ch", 1)), **spec.get("options", {}))
