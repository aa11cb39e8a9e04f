"""A slice's probability of infection (weak/scoring.py): the classifier's averaged with the label-free prior's
evidence (weak/prior_cue.prior_slice_evidence) for runs that say so, the classifier's alone for the paper's method
and for runs made before the option, and a damaged prior falls back with a warning. On real unseen patients the
prior's evidence ranks infected slices above clean ones."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from covidseg_core.data import load_slice_set
from covidseg_core.errors import InputError
from covidseg_core.events import drive
from covidseg_core.imaging.lung_model import compute_lung_fields
from covidseg_core.pipeline import stage1_config
from covidseg_core.results.metrics import roc_auc
from covidseg_core.runs import STAGE1_CONFIG_NAME
from covidseg_core.train_config import TrainConfig
from covidseg_core.weak.config import Stage1Config
from covidseg_core.weak.job import run_stage1
from covidseg_core.weak.prior_cue import prior_slice_evidence, top_share_mean
from covidseg_core.weak.scoring import classifier_probabilities, slice_probabilities

STAGE1 = dict(cls_epochs=1, batch_size=8, device="cpu", seed=0, size=64, cue="prior")


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test of this module runs torch on one thread (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def run(small_demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("scores") / "run"
    drive(run_stage1(load_slice_set(small_demo), out, Stage1Config(**STAGE1)))
    return out


def _set_slice_score(run, value: str | None) -> None:
    path = run / STAGE1_CONFIG_NAME
    options = json.loads(path.read_text())
    options.pop("slice_score", None)
    if value is not None:
        options["slice_score"] = value
    path.write_text(json.dumps(options))


def test_the_evidence_is_the_mean_of_the_highest_probabilities_inside_the_lung():
    prob = np.zeros((40, 50), np.float32)
    lung = np.zeros((40, 50), bool)
    lung[:, :40] = True                         # 1,600 lung pixels: 0.5 % of them is 8
    prob[0, :8] = np.linspace(0.6, 0.9, 8)
    prob[1, :4] = 0.5                           # the next highest, left out
    prob[:, 45:] = 1.0                          # outside the lung: never counted
    assert top_share_mean(prob, lung, share=0.005) == pytest.approx(0.75)
    assert top_share_mean(prob, lung, share=1e-6) == pytest.approx(0.9)     # at least one pixel
    assert top_share_mean(prob, np.zeros_like(lung)) == 0.0                 # no lung, no evidence


def test_new_runs_average_the_classifier_and_the_prior_old_runs_keep_the_classifier(run, small_demo):
    images = load_slice_set(small_demo).images
    alone = classifier_probabilities(run, images)
    lungs, _ = compute_lung_fields(images, "model")
    evidence = prior_slice_evidence(images, lungs, torch.device("cpu"))
    assert evidence.shape == alone.shape and ((evidence >= 0) & (evidence <= 1)).all()
    assert not np.allclose(evidence, alone)
    assert np.allclose(slice_probabilities(run, images), (alone + evidence) / 2, atol=1e-6)
    try:
        _set_slice_score(run, None)             # a run made before the option: the classifier's alone
        assert np.allclose(slice_probabilities(run, images), alone, atol=1e-6)
        _set_slice_score(run, "classifier")
        assert np.allclose(slice_probabilities(run, images), alone, atol=1e-6)
    finally:
        _set_slice_score(run, "classifier+prior")


def test_a_damaged_prior_leaves_the_classifier_alone_with_a_warning(run, small_demo, tmp_path, monkeypatch, caplog):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not weights")
    monkeypatch.setattr("covidseg_core.infer.prior_model.default_prior_path", lambda: bad)
    images = load_slice_set(small_demo).images
    with caplog.at_level(logging.WARNING):
        probs = slice_probabilities(run, images)
    assert np.allclose(probs, classifier_probabilities(run, images), atol=1e-6)
    assert "classifier's alone" in caplog.text


def test_the_paper_method_scores_slices_with_its_classifier_alone_and_a_wrong_score_is_refused(small_demo):
    cpu = torch.device("cpu")
    assert stage1_config(TrainConfig(synthetic="off"), cpu).slice_score == "classifier"
    assert stage1_config(TrainConfig(synthetic="auto"), cpu).slice_score == "classifier+prior"
    assert stage1_config(TrainConfig(synthetic="only"), cpu).slice_score == "classifier+prior"
    with pytest.raises(InputError, match="slice score"):
        drive(run_stage1(load_slice_set(small_demo), "/nonexistent/never",
                         Stage1Config(**{**STAGE1, "slice_score": "cam"})))


def test_on_unseen_patients_the_prior_evidence_ranks_infected_slices_first(shared_data):
    """c06 and r01: slices the prior never saw (it was trained on c01-c05's clean slices only); measured AUC
    0.96 and 0.93 (docs/results.md). A prior that saw nothing, or an evidence that ignored it, scores about 0.5."""
    zenodo = shared_data / "zenodo-dev"
    if not zenodo.is_dir():
        pytest.skip("zenodo-dev is not available")
    slices = load_slice_set(zenodo)
    for volume in ("c06", "r01"):
        idx = np.flatnonzero(np.array(slices.groups) == volume)
        images = slices.images[idx]
        infected = np.array([slices.labels[i] == "infected" for i in idx])
        lungs, _ = compute_lung_fields(images, "model")
        assert roc_auc(prior_slice_evidence(images, lungs, torch.device("cpu")), infected) >= 0.85, volume
