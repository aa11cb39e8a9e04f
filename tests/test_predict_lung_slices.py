"""Less work per volume (issue 14, item 2): the network sees only the slices whose lung field is not empty, with a
margin of 2 slices; the masks are the same as when every slice is predicted."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from covidseg_core.events import Progress, drive
from covidseg_core.infer.model import load_run_model
from covidseg_core.infer.predict import LUNG_MARGIN_SLICES, MIRROR_AVERAGE, predict_masks, slices_to_predict
from untrained_run import make_untrained_run


def test_slices_to_predict_keeps_a_margin_around_the_lung():
    lungs = np.zeros((12, 4, 4), bool)
    lungs[5, 1, 1] = lungs[6, 2, 2] = True
    assert LUNG_MARGIN_SLICES == 2
    assert np.flatnonzero(slices_to_predict(lungs)).tolist() == [3, 4, 5, 6, 7, 8]
    assert not slices_to_predict(np.zeros((3, 4, 4), bool)).any()


def volume_with_slices_without_lung():
    """The demo's chest slices between slices of soft tissue only (below the lung bases): 3 + 6 + 5 slices."""
    from covidseg_core.demo import make_demo_volume
    from covidseg_core.imaging.windowing import to_unit_range

    hu, _, _ = make_demo_volume(seed=0, n_slices=10, size=64)
    chest = hu[2:8].astype(np.float32)
    tissue = np.full((1, 64, 64), 40.0, np.float32)
    return to_unit_range(np.concatenate([np.repeat(tissue, 3, 0), chest, np.repeat(tissue, 5, 0)]), is_hu=True)


@pytest.fixture
def run(tmp_path, one_torch_thread):
    torch.manual_seed(0)     # marks nearly everything: whatever the lung field leaves is seen
    return make_untrained_run(tmp_path / "run", size=64, lung_method="model", head_bias=5.0, epoch=1)


def test_only_slices_with_lung_are_predicted_and_the_masks_do_not_change(run):
    images = volume_with_slices_without_lung()
    lm = load_run_model(run, "cpu", "fp32", engine="torch")
    from covidseg_core.imaging.lung_model import compute_lung_fields

    lungs, _ = compute_lung_fields(images, "model")
    has_lung = lungs.reshape(len(lungs), -1).any(axis=1)
    assert not has_lung[:3].any() and not has_lung[-5:].any() and has_lung.sum() >= 4
    seen = []
    net = lm.model
    lm.model = lambda x: (seen.append(len(x)), net(x))[1]
    events = []
    skipped = drive(predict_masks(lm, images), on_event=events.append)
    passes = 2 if MIRROR_AVERAGE else 1         # each slice and its mirror image go through the network
    assert sum(seen) == passes * int(slices_to_predict(lungs).sum()) < passes * len(images)
    progress = [ev for ev in events if isinstance(ev, Progress)]
    assert progress[-1].done == progress[-1].total == len(images)
    seen.clear()
    full = drive(predict_masks(lm, images, skip_without_lung=False))
    assert sum(seen) == passes * len(images)
    assert full[has_lung].any()
    assert np.array_equal(skipped, full)
