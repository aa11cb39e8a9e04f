"""The stage-1 classifier: a small CNN with spatial attention whose class activation map (CAM) localises infection.

Encoder -> F (C x h x w) at stride 4 (a finer map than the usual stride 8-16: small lesions are common, and a
1/8-resolution map alone caps the pseudo-mask Dice far below what is needed); dilated convolutions at that stride
widen the receptive field without losing resolution. Spatial attention `A = sigmoid(conv7x7([mean_c F; max_c F]))`,
`F' = F * A`, global average pooling, one linear unit -> infected logit. `CAM = ReLU(sum_k w_k F'_k)`.

Trained from scratch (no weights can be downloaded at run time).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import SpatialAttention

STRIDE = 4


def _conv(in_ch: int, out_ch: int, dilation: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation, stride=stride,
                                   bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class CamClassifier(nn.Module):
    """Image-level infected/clean classifier with a CAM at 1/4 of the input size."""

    def __init__(self, in_ch: int = 1, width: int = 8):
        super().__init__()
        w = int(width)
        self.spec = {"name": "cam_classifier", "in_ch": in_ch, "width": w}
        self.encoder = nn.Sequential(
            _conv(in_ch, w, stride=2),                               # 1/2
            _conv(w, 2 * w), nn.MaxPool2d(2),                        # 1/4
            _conv(2 * w, 4 * w), _conv(4 * w, 4 * w, dilation=2),
            _conv(4 * w, 4 * w, dilation=3), _conv(4 * w, 4 * w, dilation=1),
        )
        self.attention = SpatialAttention(7)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(4 * w, 1)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """F' = F * A and A, for input x of shape (N, 1, H, W)."""
        return self.attention(self.encoder(x), return_map=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, _ = self.features(x)
        return self.fc(self.dropout(feats.mean(dim=(2, 3)))).squeeze(1)

    def logits_and_cam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Infected logits (N,) and raw CAMs (N, h, w) = ReLU(sum_k w_k F'_k), not yet normalised."""
        feats, _ = self.features(x)
        logits = self.fc(feats.mean(dim=(2, 3))).squeeze(1)
        cam = F.relu(torch.einsum("nchw,c->nhw", feats, self.fc.weight[0]))
        return logits, cam


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches) -> None:
    """Re-estimate BatchNorm running statistics with the current weights (plain averages over `batches`).

    During training the running statistics trail the weights; with few steps per epoch an eval-mode classifier
    can then rank slices perfectly yet call them all clean, and fusion depends on what it calls infected.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not norms:
        return
    was_training = model.training
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None          # cumulative average over the batches given
    model.train()
    for x in batches:
        model.encoder(x)
    for m, mom in zip(norms, saved):
        m.momentum = mom
    model.train(was_training)


def build_classifier(spec: dict | None = None) -> CamClassifier:
    spec = dict(spec or {})
    spec.pop("name", None)
    return CamClassifier(**spec)
