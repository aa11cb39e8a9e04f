"""The label-free segmenter prior (seg/prior.py): saved small (8 bits per output channel), read back close to
the weights that were saved, used only by a run whose network and size fit, and a damaged file is a note."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from covidseg_core.data import load_slice_set
from covidseg_core.events import Message, drive
from covidseg_core.models.segmenter import build_from_spec
from covidseg_core.pipeline import train_on_targets
from covidseg_core.runs import BEST, LAST, RunFolder
from covidseg_core.seg.prior import blend_with_start, default_prior_path, matching_prior, read_prior, save_prior
from covidseg_core.train_config import TrainConfig

SPEC = {"name": "light", "in_ch": 1, "options": {"base": 8}}


def test_saved_prior_reads_back_within_half_a_quantisation_step_and_is_small(tmp_path):
    torch.manual_seed(0)
    state = build_from_spec(SPEC).state_dict()
    path = tmp_path / "prior.safetensors"
    save_prior(path, state, SPEC, 128, {"steps": 1})
    back, meta = read_prior(path)
    assert meta["spec"] == SPEC and meta["size"] == 128 and set(back) == set(state)
    for k, v in state.items():
        if v.is_floating_point() and v.dim() >= 2:
            flat = v.reshape(v.shape[0], -1)
            step = (flat.max(1).values - flat.min(1).values) / 255
            err = (back[k] - v).reshape(v.shape[0], -1).abs().max(1).values
            assert (err <= step * 0.5 + 2e-3 * flat.abs().max(1).values + 1e-6).all(), k
        elif v.is_floating_point():
            assert torch.allclose(back[k], v, rtol=1e-3, atol=1e-3), k
        else:
            assert torch.equal(back[k], v), k
    float_bytes = sum(v.numel() * 4 for v in state.values() if v.is_floating_point())
    assert path.stat().st_size < 0.5 * float_bytes                 # float32 would be about float_bytes
    build_from_spec(SPEC).load_state_dict(back)          # loads into the network as it is


def test_prior_is_used_only_by_a_run_it_fits(tmp_path):
    path = tmp_path / "prior.safetensors"
    save_prior(path, build_from_spec(SPEC).state_dict(), SPEC, 128, {})
    assert matching_prior(SPEC, 128, path)[0] is not None
    assert matching_prior(SPEC, 140, path)[0] is not None                  # within 25 % of its size
    state, note = matching_prior(SPEC, 256, path)
    assert state is None and "size 128" in note
    state, note = matching_prior({**SPEC, "options": {"base": 16}}, 128, path)
    assert state is None and "another network" in note


def test_a_damaged_or_missing_prior_is_a_random_start_with_a_note(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    state, note = matching_prior(SPEC, 128, bad)
    assert state is None and "could not be read" in note
    state, note = matching_prior(SPEC, 128, tmp_path / "missing.safetensors")
    assert state is None and "no segmenter prior" in note


def test_the_shipped_prior_fits_a_budgeted_cpu_run():
    state, note = matching_prior({"name": "light", "in_ch": 1, "options": {"base": 16}}, 128, default_prior_path())
    assert state is not None, note


def test_training_on_given_targets_starts_where_train_job_starts(small_demo, tmp_path, one_torch_thread):
    """Full supervision (the ceiling row, reviewed masks) starts from the prior too, unless told `init=none`:
    at learning rate 0 the trained weights are the prior's."""
    torch.manual_seed(3)
    prior = tmp_path / "prior.safetensors"
    save_prior(prior, build_from_spec(SPEC).state_dict(), SPEC, 64, {})
    expected = read_prior(prior)[0]
    slices = load_slice_set(small_demo)
    targets = slices.gt_masks.astype(np.uint8)
    for init in (str(prior), "none"):
        cfg = TrainConfig(size=64, seg_epochs=1, base=8, batch_size=4, lr=0.0, budget_minutes=0, init=init)
        notes = []
        drive(train_on_targets(slices, targets, tmp_path / init[-4:], cfg, device="cpu"),
              lambda e: notes.append(e.text) if isinstance(e, Message) else None)
        weights = RunFolder(tmp_path / init[-4:]).load_checkpoint(BEST)["model"]
        same = all(torch.allclose(weights[k], expected[k]) for k in expected if expected[k].dim() >= 2)
        assert same == (init != "none")
        assert any("label-free prior" in n for n in notes) == (init != "none")


def test_blend_keeps_the_share_asked_for_of_the_start_and_refuses_a_mismatch():
    tuned = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(7)}
    start = {"w": torch.tensor([3.0, -1.0]), "n": torch.tensor(0)}
    assert torch.equal(blend_with_start(tuned, start, 0.0)["w"], tuned["w"])
    assert torch.equal(blend_with_start(tuned, start, 1.0)["w"], start["w"])
    half = blend_with_start(tuned, start, 0.25)
    assert torch.allclose(half["w"], torch.tensor([1.5, 2.0])) and int(half["n"]) == 7   # counts stay the tuned ones
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            blend_with_start(tuned, start, bad)
    with pytest.raises(ValueError):
        blend_with_start(tuned, {"w": torch.zeros(3)}, 0.5)


def test_the_best_checkpoint_blends_the_trained_weights_with_the_prior(small_demo, tmp_path, one_torch_thread):
    """What predict uses (BEST) keeps `prior_share` of the prior; what a resumed run continues from (LAST) is the
    fine-tuned network alone."""
    torch.manual_seed(4)
    prior = tmp_path / "prior.safetensors"
    save_prior(prior, build_from_spec(SPEC).state_dict(), SPEC, 64, {})
    start = read_prior(prior)[0]
    slices = load_slice_set(small_demo)
    for share in (0.0, 0.5):
        cfg = TrainConfig(size=64, seg_epochs=1, base=8, batch_size=4, budget_minutes=0, init=str(prior),
                          prior_share=share)
        run = RunFolder(tmp_path / f"share{share}")
        notes = []
        drive(train_on_targets(slices, slices.gt_masks.astype(np.uint8), run.path, cfg, device="cpu"),
              lambda e: notes.append(e.text) if isinstance(e, Message) else None)
        assert any("keeps 50% of the prior" in n for n in notes) == (share == 0.5)
        best, last = run.load_checkpoint(BEST), run.load_checkpoint(LAST)
        assert best["prior_share"] == share
        tuned = last["model"]
        assert any(not torch.allclose(v, start[k], atol=1e-4) for k, v in tuned.items() if v.dim() >= 2)  # it moved
        for k, v in best["model"].items():
            if v.is_floating_point():
                assert torch.allclose(v, tuned[k] + share * (start[k] - tuned[k]), atol=1e-6), k
