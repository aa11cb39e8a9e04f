"""Building blocks of the lightweight segmenter (METHOD.md, Stage 2) and of the Stage-1 classifier.

Every block maps (N, C_in, H, W) -> (N, C_out, H, W) at the same spatial size; only the U-Net pools and
upsamples. Convolutions followed by BatchNorm carry no bias (BN's shift replaces it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int = 1, *, dilation: int = 1, groups: int = 1,
                 relu: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """Conv (same padding, no bias) -> BN -> activation (none when `relu` is None)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation,
                  groups=groups, bias=False),
        nn.BatchNorm2d(out_ch)]
    if relu is not None:
        layers.append(relu(inplace=True))
    return nn.Sequential(*layers)


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise 3x3 (optionally dilated) -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU.

    `depth_multiplier` k gives each input channel k depthwise filters. With a one-channel CT slice as input a
    plain depthwise conv would be a single 3x3 filter, so the first level of the network uses k > 1 there.
    """

    def __init__(self, in_ch: int, out_ch: int, *, dilation: int = 1, depth_multiplier: int = 1):
        mid = in_ch * depth_multiplier
        super().__init__(
            conv_bn_relu(in_ch, mid, 3, dilation=dilation, groups=in_ch),
            conv_bn_relu(mid, out_ch, 1))


class ConvBlock(nn.Sequential):
    """Two depthwise-separable convs (the paper's "conv block"); `plain=True` uses standard 3x3 conv+BN+ReLU."""

    def __init__(self, in_ch: int, out_ch: int, *, plain: bool = False, depth_multiplier: int = 1):
        if plain:
            super().__init__(conv_bn_relu(in_ch, out_ch, 3), conv_bn_relu(out_ch, out_ch, 3))
        else:
            super().__init__(DepthwiseSeparableConv(in_ch, out_ch, depth_multiplier=depth_multiplier),
                             DepthwiseSeparableConv(out_ch, out_ch))


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: GAP -> FC (C/r) + ReLU -> FC (C) + sigmoid -> scale each channel."""

    def __init__(self, channels: int, reduction: int = 8, min_hidden: int = 4):
        super().__init__()
        hidden = max(channels // reduction, min_hidden)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(x.mean(dim=(2, 3)))
        return x * weights[:, :, None, None]


class SpatialAttention(nn.Module):
    """A = sigmoid(conv7x7([mean_c(F); max_c(F)])); returns F * A, and A too when `return_map=True`."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, 1, H, W) map in [0, 1]."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: torch.Tensor, return_map: bool = False):
        att = self.attention_map(x)
        return (x * att, att) if return_map else x * att


class FEBlock(nn.Module):
    """Feature extraction: parallel DS convs at dilations 1, 2, 3 -> concat -> pointwise fuse -> spatial
    attention, plus a 1x1-projected shortcut; the sum goes through BN + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, *, dilations: tuple[int, ...] = (1, 2, 3),
                 depth_multiplier: int = 1):
        super().__init__()
        self.branches = nn.ModuleList(
            DepthwiseSeparableConv(in_ch, out_ch, dilation=d, depth_multiplier=depth_multiplier)
            for d in dilations)
        self.fuse = conv_bn_relu(out_ch * len(dilations), out_ch, 1)
        self.attention = SpatialAttention()
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.out = nn.Sequential(nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))
        return self.out(self.attention(y) + self.shortcut(x))


class _PooledBranch(nn.Module):
    """Adaptive average pool to `bins` x `bins`, pointwise conv, upsample back. No BN: with bins=1 and a batch
    of one there is a single value per channel and BN cannot train on it."""

    def __init__(self, in_ch: int, out_ch: int, bins: int):
        super().__init__()
        self.bins = bins
        self.conv = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.adaptive_avg_pool2d(x, self.bins))
        return F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False)


class MDPPM(nn.Module):
    """Modified dilated pyramid pooling: [input, pool bins 1 and 2 (-> C/4), DS convs at dilation 2 and 4
    (-> C/4)] concatenated (2C channels) and fused by a pointwise conv to `out_ch`."""

    def __init__(self, in_ch: int, out_ch: int | None = None, *, bins: tuple[int, ...] = (1, 2),
                 dilations: tuple[int, ...] = (2, 4)):
        super().__init__()
        out_ch = out_ch or in_ch
        quarter = max(in_ch // 4, 1)
        self.pools = nn.ModuleList(_PooledBranch(in_ch, quarter, b) for b in bins)
        self.dilated = nn.ModuleList(DepthwiseSeparableConv(in_ch, quarter, dilation=d) for d in dilations)
        self.fuse = conv_bn_relu(in_ch + quarter * (len(bins) + len(dilations)), out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x] + [p(x) for p in self.pools] + [d(x) for d in self.dilated]
        return self.fuse(torch.cat(parts, dim=1))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLab v3) with depthwise-separable atrous convs, for the ablation:
    [1x1 conv, DS convs at rates 6, 12, 18, image pooling], each to C/4, concatenated and fused to `out_ch`.
    The rates are DeepLab's for output stride 16, which is the stride of our bottleneck."""

    def __init__(self, in_ch: int, out_ch: int | None = None, *, rates: tuple[int, ...] = (6, 12, 18)):
        super().__init__()
        out_ch = out_ch or in_ch
        quarter = max(in_ch // 4, 1)
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_ch, quarter, 1)]
            + [DepthwiseSeparableConv(in_ch, quarter, dilation=r) for r in rates]
            + [_PooledBranch(in_ch, quarter, 1)])
        self.fuse = conv_bn_relu(quarter * len(self.branches), out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([b(x) for b in self.branches], dim=1))


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck at constant width: pw expand (x`expansion`) + ReLU6, dw 3x3 + ReLU6, linear pw,
    identity shortcut."""

    def __init__(self, channels: int, expansion: int = 2):
        super().__init__()
        hidden = channels * expansion
        self.body = nn.Sequential(
            conv_bn_relu(channels, hidden, 1, relu=nn.ReLU6),
            conv_bn_relu(hidden, hidden, 3, groups=hidden, relu=nn.ReLU6),
            conv_bn_relu(hidden, channels, 1, relu=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
