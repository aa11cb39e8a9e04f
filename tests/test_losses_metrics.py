"""The segmenter loss ignores unlabelled pixels and ranks predictions sensibly; metrics on hand-made masks."""
import math

import numpy as np
import pytest
import torch

from covidseg_core.constants import IGNORE
from covidseg_core.seg.losses import tversky_focal_loss
from covidseg_core.weak.losses import balanced_bce
from covidseg_core.results.metrics import Confusion, confusion, dice, sensitivity, specificity, summarize


def _target():
    t = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    t[0, 0, 2:5, 2:5] = 1
    t[1, 0, 6:, :] = IGNORE
    t[0, 0, 0, :] = IGNORE
    return t


def _logits_from(target: torch.Tensor, confidence: float) -> torch.Tensor:
    """Logits that say the right class with the given margin (ignore pixels get noise)."""
    sign = torch.where(target == 1, 1.0, -1.0)
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    return torch.where(target == IGNORE, noise, sign * confidence)


def test_ignored_pixels_change_nothing():
    target = _target()
    logits = _logits_from(target, 1.0)
    other = logits.clone()
    other[target == IGNORE] = torch.linspace(-30, 30, int((target == IGNORE).sum()))
    torch.testing.assert_close(tversky_focal_loss(logits, target), tversky_focal_loss(other, target))
    # and they receive no gradient
    logits.requires_grad_(True)
    tversky_focal_loss(logits, target).backward()
    assert float(logits.grad[target == IGNORE].abs().max()) == 0.0
    assert float(logits.grad[target != IGNORE].abs().max()) > 0.0


def test_valid_mask_works_like_ignore():
    target = _target()
    valid = target != IGNORE
    plain = target.clone()
    plain[~valid] = 0
    logits = _logits_from(target, 0.5)
    torch.testing.assert_close(tversky_focal_loss(logits, plain, valid), tversky_focal_loss(logits, target))


def test_better_predictions_cost_less():
    target = _target()
    losses = [float(tversky_focal_loss(_logits_from(target, c), target)) for c in (-2.0, 0.0, 1.0, 4.0)]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.3 * losses[0]


def test_loss_matches_the_formula_by_hand():
    target = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    target[0, 0, 0, :] = 1                   # 4 infection pixels, 12 background
    logits = torch.zeros(1, 1, 4, 4)         # p = 0.5 everywhere: TP 2, FN 2, FP 6
    ti = 2 / (2 + 0.7 * 2 + 0.3 * 6)
    focal = 0.25 * math.log(2)               # (1 - 0.5)^2 * BCE(0.5)
    got = tversky_focal_loss(logits, target, smooth=0.0, gamma_t=0.5, w_t=0.6, w_f=0.4)
    assert float(got) == pytest.approx(0.6 * (-math.log(ti)) ** 0.5 + 0.4 * focal, rel=1e-6)


def test_misses_cost_more_than_false_alarms():
    # alpha=0.7 weighs false negatives above false positives (beta=0.3)
    target = torch.zeros(1, 1, 10, 10, dtype=torch.long)
    target[0, 0, :, :5] = 1
    miss = _logits_from(target, 5.0)
    miss[0, 0, :2, :5] = -5.0          # 10 missed infection pixels
    alarm = _logits_from(target, 5.0)
    alarm[0, 0, :2, 5:] = 5.0          # 10 false-alarm pixels
    plain = dict(w_f=0.0)
    assert tversky_focal_loss(miss, target, **plain) > tversky_focal_loss(alarm, target, **plain)


def test_no_foreground_is_finite_and_punishes_false_alarms():
    target = torch.zeros(2, 1, 16, 16, dtype=torch.long)
    quiet = torch.full(target.shape, -6.0, requires_grad=True)
    loud = torch.full(target.shape, 2.0)
    l_quiet = tversky_focal_loss(quiet, target)
    assert torch.isfinite(l_quiet)
    l_quiet.backward()
    assert torch.isfinite(quiet.grad).all()
    assert float(tversky_focal_loss(loud, target)) > float(l_quiet.detach())


def test_all_ignored_is_zero_with_a_graph():
    target = torch.full((1, 1, 4, 4), IGNORE, dtype=torch.uint8)
    logits = torch.randn(1, 1, 4, 4, requires_grad=True)
    loss = tversky_focal_loss(logits, target)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert float(logits.grad.abs().sum()) == 0.0


def test_perfect_prediction_gradient_is_finite():
    target = _target()
    logits = _logits_from(target, 30.0).requires_grad_(True)
    loss = tversky_focal_loss(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_shapes_and_labels_are_checked():
    with pytest.raises(ValueError):
        tversky_focal_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))
    bad = torch.zeros(1, 4, 4, dtype=torch.long)
    bad[0, 0, 0] = 127  # the on-disk ignore value must be converted before training
    with pytest.raises(ValueError):
        tversky_focal_loss(torch.zeros(1, 1, 4, 4), bad)
    # (N, H, W) logits are accepted as well
    assert torch.isfinite(tversky_focal_loss(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)))


def test_balanced_bce_weighs_classes_equally():
    logits = torch.tensor([2.0, 2.0, 2.0, -1.0])
    targets = torch.tensor([0.0, 0.0, 0.0, 1.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    expected = 0.5 * bce[:3].mean() + 0.5 * bce[3]
    torch.testing.assert_close(balanced_bce(logits, targets), expected)
    # with the training set's share of positives the weights are fixed: 0.5/0.25 for positives, 0.5/0.75 else
    weighted = (bce * torch.tensor([2 / 3, 2 / 3, 2 / 3, 2.0])).mean()
    torch.testing.assert_close(balanced_bce(logits, targets, pos_fraction=0.25), weighted)
    # one class only: the plain mean
    torch.testing.assert_close(balanced_bce(logits[:3], targets[:3]), bce[:3].mean())
    with pytest.raises(ValueError):
        balanced_bce(logits, targets, pos_fraction=1.0)


# ---- metrics -------------------------------------------------------------------------------------------------

def test_confusion_and_rates_by_hand():
    gt = np.zeros((4, 5), bool)
    gt[1:3, 1:4] = True                      # 6 positives
    pred = np.zeros((4, 5), bool)
    pred[1:3, 2:5] = True                    # 6 predicted, 4 of them right
    c = confusion(pred, gt)
    assert c == Confusion(tp=4, fp=2, tn=12, fn=2)
    assert dice(c) == pytest.approx(8 / 12)
    assert sensitivity(c) == pytest.approx(4 / 6)
    assert specificity(c) == pytest.approx(12 / 14)


def test_edge_cases():
    empty = np.zeros((3, 3), bool)
    full = np.ones((3, 3), bool)
    both_empty = confusion(empty, empty)
    assert dice(both_empty) == 1.0
    assert math.isnan(sensitivity(both_empty))
    assert specificity(both_empty) == 1.0
    missed = confusion(empty, full)
    assert dice(missed) == 0.0 and sensitivity(missed) == 0.0 and math.isnan(specificity(missed))
    false_alarm = confusion(full, empty)
    assert dice(false_alarm) == 0.0 and specificity(false_alarm) == 0.0


def test_masks_must_be_binary_like_and_same_shape():
    assert confusion(np.array([[0, 255]], np.uint8), np.array([[0, 1]], np.uint8)) == Confusion(1, 0, 1, 0)
    with pytest.raises(TypeError):
        confusion(np.array([[0.2, 0.9]]), np.array([[0, 1]]))
    with pytest.raises(ValueError):
        confusion(np.zeros((2, 2), bool), np.zeros((2, 3), bool))


def test_summarize_means_over_infected_and_pools_over_all():
    gt1 = np.zeros((4, 4), bool)
    gt1[:2, :2] = True                       # 4 positives
    pred1 = np.zeros((4, 4), bool)
    pred1[:2, :1] = True                     # TP 2, FN 2
    gt2 = np.zeros((2, 2), bool)
    gt2[0, 0] = True                         # 1 positive
    pred2 = gt2.copy()                       # perfect
    gt3 = np.zeros((3, 3), bool)             # clean image
    pred3 = np.zeros((3, 3), bool)
    pred3[0, 0] = True                       # one false alarm
    r = summarize([pred1, pred2, pred3], [gt1, gt2, gt3])
    assert r["n_images"] == 3 and r["n_infected"] == 2 and r["clean_with_prediction"] == 1
    assert r["dice_mean"] == pytest.approx((4 / 6 + 1.0) / 2)
    assert r["sensitivity_mean"] == pytest.approx((0.5 + 1.0) / 2)
    assert r["specificity_mean"] == pytest.approx(1.0)
    # pooled: TP 3, FN 2, FP 1, TN 12 + 3 + 8 = 23
    assert r["dice_pooled"] == pytest.approx(6 / 9)
    assert r["sensitivity_pooled"] == pytest.approx(3 / 5)
    assert r["specificity_pooled"] == pytest.approx(23 / 24)


def test_summarize_without_infection():
    r = summarize([np.zeros((2, 2), bool)], [np.zeros((2, 2), bool)])
    assert r["n_infected"] == 0 and math.isnan(r["dice_mean"]) and math.isnan(r["sensitivity_pooled"])
    assert r["dice_pooled"] == 1.0 and r["specificity_pooled"] == 1.0
    with pytest.raises(ValueError):
        summarize([np.zeros((2, 2), bool)], [])
