"""Blocks keep shapes and pass gradients; the segmenters take any input size; parameter counts are pinned."""
import pytest
import torch
from torch import nn

from covidseg_core.errors import InputError
from covidseg_core.models.base import fold_batchnorm, pad_to_multiple
from covidseg_core.models.blocks import (ASPP, MDPPM, ChannelAttention, ConvBlock, DepthwiseSeparableConv,
                                         FEBlock, InvertedResidual, SpatialAttention)
from covidseg_core.models.segmenter import SEGMENTER_NAMES, LightUNet, build_segmenter
from covidseg_core.models.unet import UNet

LIGHT_PARAMS = 1_147_355
UNET_PARAMS = 31_036_481


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # one thread: on a small shared CPU, OpenMP threads that wait on each other make these tiny nets ~5x slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def _check_grads(module: nn.Module, out: torch.Tensor, x: torch.Tensor):
    (out * torch.randn_like(out)).sum().backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, f"parameters without gradient: {missing}"
    assert x.grad is not None and x.grad.abs().sum() > 0


BLOCKS = [
    ("ds", lambda: DepthwiseSeparableConv(6, 10), 6, 10),
    ("ds_dilated", lambda: DepthwiseSeparableConv(6, 10, dilation=3), 6, 10),
    ("ds_multiplier", lambda: DepthwiseSeparableConv(1, 8, depth_multiplier=8), 1, 8),
    ("conv_block", lambda: ConvBlock(6, 10), 6, 10),
    ("conv_block_plain", lambda: ConvBlock(6, 10, plain=True), 6, 10),
    ("channel_attention", lambda: ChannelAttention(16), 16, 16),
    ("spatial_attention", lambda: SpatialAttention(), 8, 8),
    ("fe", lambda: FEBlock(6, 10), 6, 10),
    ("mdppm", lambda: MDPPM(16, 12), 16, 12),
    ("aspp", lambda: ASPP(16, 12), 16, 12),
    ("inverted_residual", lambda: InvertedResidual(8), 8, 8),
]


@pytest.mark.parametrize("make,in_ch,out_ch", [b[1:] for b in BLOCKS], ids=[b[0] for b in BLOCKS])
def test_block_keeps_size_and_passes_gradients(make, in_ch, out_ch):
    block = make()
    x = torch.randn(2, in_ch, 13, 10, requires_grad=True)
    out = block(x)
    assert out.shape == (2, out_ch, 13, 10)
    _check_grads(block, out, x)


def test_spatial_attention_exposes_its_map():
    sa = SpatialAttention()
    x = torch.randn(2, 5, 9, 7)
    with torch.no_grad():
        out, att = sa(x, return_map=True)
    assert att.shape == (2, 1, 9, 7)
    assert float(att.min()) >= 0.0 and float(att.max()) <= 1.0
    torch.testing.assert_close(out, x * att)
    torch.testing.assert_close(sa.attention_map(x), att)


def test_channel_attention_scales_whole_channels():
    ca = ChannelAttention(8)
    x = torch.rand(1, 8, 6, 6) + 0.1
    with torch.no_grad():
        ratio = ca(x) / x
    # one weight per channel, the same at every pixel, within (0, 1)
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-6)
    assert float(ratio.min()) > 0.0 and float(ratio.max()) < 1.0


def test_mdppm_trains_on_a_batch_of_one():
    # the bins-1 branch pools to a single value per channel: it must not use BatchNorm
    block = MDPPM(16).train()
    x = torch.randn(1, 16, 4, 4, requires_grad=True)
    _check_grads(block, block(x), x)


def test_inverted_residual_is_identity_plus_residual():
    block = InvertedResidual(8).eval()
    with torch.no_grad():
        block.body[-1][1].weight.zero_()  # last BN: scale 0, shift 0 -> residual branch is exactly zero
        block.body[-1][1].bias.zero_()
    x = torch.randn(1, 8, 5, 5)
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("size", [(64, 64), (70, 45), (17, 33), (5, 3), (1, 1)])
def test_light_unet_output_has_input_size(size):
    model = LightUNet().eval()
    x = torch.rand(2, 1, *size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 1, *size)
    assert torch.isfinite(out).all()


def test_padding_reflects_when_it_can():
    x = torch.arange(30.0).reshape(1, 1, 6, 5)
    padded, hw = pad_to_multiple(x, 8)
    assert hw == (6, 5) and padded.shape == (1, 1, 8, 8)
    torch.testing.assert_close(padded[..., :6, :5], x)
    assert float(padded[0, 0, 0, 5]) == float(x[0, 0, 0, 3])  # mirrored, not zero
    same, _ = pad_to_multiple(torch.zeros(1, 1, 16, 32), 16)
    assert same.shape == (1, 1, 16, 32)


def test_light_unet_trains_end_to_end():
    model = LightUNet().train()
    x = torch.rand(2, 1, 40, 24, requires_grad=True)
    out = model(x)
    _check_grads(model, out, x)


def test_parameter_counts_are_pinned():
    light = build_segmenter("light")
    unet = build_segmenter("unet")
    assert light.num_parameters() == LIGHT_PARAMS
    assert LIGHT_PARAMS <= 1_500_000
    assert unet.num_parameters() == UNET_PARAMS
    assert 30_000_000 < UNET_PARAMS < 32_000_000
    assert unet.num_parameters() >= 10 * light.num_parameters()


def test_variants_build_and_differ_as_the_ablation_says():
    models = {name: build_segmenter(name) for name in SEGMENTER_NAMES}
    counts = {name: m.num_parameters() for name, m in models.items()}
    assert counts["fe_rc_mdppm"] == counts["light"]
    assert counts["baseline"] < counts["fe"] < counts["fe_rc"] < counts["fe_rc_mdppm"]
    assert counts["fe_rc"] < counts["fe_rc_aspp"]
    assert not any(isinstance(m, FEBlock) for m in models["baseline"].modules())
    assert not any(isinstance(m, InvertedResidual) for m in models["baseline"].modules())
    assert not any(isinstance(m, (MDPPM, ASPP)) for m in models["baseline"].modules())
    assert any(isinstance(m, ASPP) for m in models["fe_rc_aspp"].modules())
    assert sum(isinstance(m, InvertedResidual) for m in models["light"].modules()) == 4 + 3 + 2 + 1
    # the baseline keeps depthwise-separable conv blocks (the paper's network minus FE, RC, MDPPM)
    assert any(isinstance(m, DepthwiseSeparableConv) for m in models["baseline"].modules())
    x = torch.rand(1, 1, 32, 48)
    for name, m in models.items():
        if name == "unet":
            continue
        with torch.no_grad():
            assert m.eval()(x).shape == (1, 1, 32, 48), name


def test_unet_output_has_input_size():
    model = UNet(base=8).eval()  # the architecture at a small width keeps the test fast
    with torch.no_grad():
        assert model(torch.rand(1, 1, 70, 45)).shape == (1, 1, 70, 45)
    assert UNet(base=8, bilinear=True).eval()(torch.rand(1, 1, 19, 21)).shape == (1, 1, 19, 21)


def test_predict_gives_probabilities_and_restores_mode():
    model = LightUNet().train()
    x = torch.rand(2, 1, 20, 30)
    prob = model.predict(x)
    assert model.training
    assert prob.shape == (2, 1, 20, 30) and not prob.requires_grad
    assert float(prob.min()) >= 0.0 and float(prob.max()) <= 1.0
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(prob, torch.sigmoid(model(x)))


def test_bad_input_shapes_are_refused():
    model = LightUNet()
    with pytest.raises(InputError):
        model(torch.rand(1, 3, 16, 16))
    with pytest.raises(InputError):
        model(torch.rand(16, 16))
    with pytest.raises(ValueError):
        build_segmenter("resnet")
    with pytest.raises(ValueError):
        LightUNet(bottleneck="psp")


@pytest.mark.parametrize("name", ["light", "unet"])
def test_inference_copy_folds_batchnorm_and_keeps_outputs(name):
    model = build_segmenter(name, **({"base": 8} if name == "unet" else {}))
    with torch.no_grad():  # BN statistics far from the identity, so a wrong fold would show
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.train()
    fast = model.inference_copy()
    assert model.training, "the original must be left as it was"
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    n_bn_left = sum(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    # only the FE blocks' BN after the shortcut sum has no conv before it
    assert n_bn_left == sum(isinstance(m, FEBlock) for m in model.modules()) < n_bn
    assert not any(p.requires_grad for p in fast.parameters())
    x = torch.rand(2, 1, 37, 29)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model.eval()(x), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast.predict(x), model.predict(x), atol=1e-5, rtol=1e-4)


def test_fold_batchnorm_needs_eval_mode():
    with pytest.raises(ValueError):
        fold_batchnorm(LightUNet().train())
