"""Pseudo masks from the label-free prior (weak/prior_cue.py): the mask rule, stage 1 with cue "prior" (the
infected slices' masks are the prior's, clean slices stay background), the fall-back to the CAM with a warning
when the prior is damaged, and which cue each `train --synthetic` mode takes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from covidseg_core.constants import BACKGROUND, FOREGROUND, IGNORE
from covidseg_core.data import load_slice_set
from covidseg_core.errors import InputError
from covidseg_core.events import Message, drive
from covidseg_core.pipeline import stage1_config
from covidseg_core.runs import slice_png_name
from covidseg_core.train_config import TrainConfig
from covidseg_core.weak.config import Stage1Config
from covidseg_core.weak.job import labelled_lung_fields, run_stage1
from covidseg_core.weak.prior_cue import prior_maps, prior_pseudo_mask
from covidseg_core.weak.pseudo_masks import from_png_values

STAGE1 = dict(cls_epochs=1, batch_size=8, device="cpu", seed=0, size=64)


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test of this module runs torch on one thread (see conftest.one_torch_thread)."""


def test_mask_rule_keeps_inside_the_lung_with_an_uncertain_rim():
    prob = np.zeros((20, 20), np.float32)
    prob[2:12, 2:12] = 0.3            # rim: ignore
    prob[4:10, 4:10] = 0.9            # core: foreground
    prob[15:17, 15:17] = 0.9          # a speck: ignore when pieces must be larger
    lung = np.ones((20, 20), bool)
    lung[:, :6] = False               # outside the lung nothing is foreground or ignore
    out = prior_pseudo_mask(prob, lung, min_component_frac=0.02)
    assert (out[:, :6] == BACKGROUND).all()
    assert (out[4:10, 6:10] == FOREGROUND).all() and (out == FOREGROUND).sum() == 24
    assert (out[2:4, 6:12] == IGNORE).all() and (out[15:17, 15:17] == IGNORE).all()
    assert out[0, 19] == BACKGROUND
    as_uint8 = prior_pseudo_mask(np.round(prob * 255).astype(np.uint8), lung, min_component_frac=0.02)
    assert np.array_equal(as_uint8, out)
    from covidseg_core.infer.predict import THRESHOLD
    from covidseg_core.weak.prior_cue import FG_PROBABILITY
    assert FG_PROBABILITY == THRESHOLD          # pseudo masks and predictions cut the probability at one place


def test_stage1_takes_the_infected_slices_masks_from_the_prior(small_demo, tmp_path):
    slices = load_slice_set(small_demo)
    events = []
    drive(run_stage1(slices, tmp_path / "run", Stage1Config(cue="prior", **STAGE1)), events.append)
    assert any(isinstance(e, Message) and "label-free prior" in e.text for e in events)
    lungs, _ = labelled_lung_fields(slices, Stage1Config.lung_method)
    infected = slices.indices("infected")
    maps, _ = prior_maps(slices.images[infected], torch.device("cpu"))
    for k, i in enumerate(infected):
        written = from_png_values(np.array(Image.open(tmp_path / "run" / "pseudo" / slice_png_name(slices.ids[i]))))
        assert np.array_equal(written, prior_pseudo_mask(maps[k], lungs[i], Stage1Config.min_component_frac))
    for i in slices.indices("clean"):
        written = np.array(Image.open(tmp_path / "run" / "pseudo" / slice_png_name(slices.ids[i])))
        assert not written.any()
    found = sum(int((maps[k] >= 128).any()) for k in range(len(infected)))
    assert found > 0                  # the prior sees something on the demo's infected slices


def test_a_damaged_prior_falls_back_to_the_cam_with_a_warning(small_demo, tmp_path, monkeypatch):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not weights")
    monkeypatch.setattr("covidseg_core.infer.prior_model.default_prior_path", lambda: bad)
    slices = load_slice_set(small_demo)
    events = []
    drive(run_stage1(slices, tmp_path / "prior", Stage1Config(cue="prior", **STAGE1)), events.append)
    drive(run_stage1(slices, tmp_path / "cam", Stage1Config(cue="cam", **STAGE1)))
    assert any(isinstance(e, Message) and e.level == "warning" and "could not be read" in e.text for e in events)
    for name in (tmp_path / "cam" / "pseudo").iterdir():
        assert np.array_equal(np.array(Image.open(name)), np.array(Image.open(tmp_path / "prior" / "pseudo" / name.name)))


def test_each_training_mode_takes_its_cue_and_a_wrong_cue_is_refused(small_demo):
    cpu = torch.device("cpu")
    assert stage1_config(TrainConfig(synthetic="off"), cpu).cue == "cam"          # the paper's method
    assert stage1_config(TrainConfig(synthetic="auto"), cpu).cue == "prior"
    assert stage1_config(TrainConfig(synthetic="only"), cpu).cue == "prior"
    with pytest.raises(InputError, match="cue"):
        drive(run_stage1(load_slice_set(small_demo), "/nonexistent/never", Stage1Config(cue="crf", **STAGE1)))
