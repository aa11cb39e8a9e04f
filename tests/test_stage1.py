"""Stage 1 end to end on small synthetic slices: pseudo masks that find the lesions, fusion modes, run folder,
cancel, NaN and label errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from covidseg_core.weak.cam import FusionBank, normalise_cams
from covidseg_core.errors import Cancelled, InputError, LabelError, TrainingError
from covidseg_core.events import CancelToken, Done, EpochReport, Progress, drive
from covidseg_core.imaging.lungs import lung_field
from covidseg_core.constants import IGNORE
from covidseg_core.results.metrics import roc_auc
from covidseg_core.runs import RunFolder
from covidseg_core.weak.config import Stage1Config
from covidseg_core.weak.job import run_stage1
from covidseg_core.weak.pseudo_masks import from_png_values, make_pseudo_mask, to_png_values

from stage1_synthetic import synthetic_slice_set

# toy ellipses are not CT: the learned lung field does not know them, the threshold method does
FAST = dict(cls_epochs=8, batch_size=10, lr=3e-3, device="cpu", seed=0, lung_method="threshold")
# synthetic lungs are flat (no vessels), so a plain "denser than the median" saliency (the zenodo-dev default)
# selects noise; these thresholds suit the synthetic lesions
SYNTH_THRESHOLDS = dict(t_fg=0.4, sal_fg=0.5, t_bg=0.1, sal_bg=0.0)


def dice(a, b):
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test of this module runs torch on one thread (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    slices = synthetic_slice_set(n_infected=20, n_clean=20, seed=0, size=48)
    out = tmp_path_factory.mktemp("stage1") / "run"
    events = []
    result = drive(run_stage1(slices, out, Stage1Config(fusion="avg", **FAST, **SYNTH_THRESHOLDS)), events.append)
    return slices, out, events, result


def test_run_folder_layout_and_metrics(trained):
    slices, out, events, result = trained
    assert (out / "config.json").is_file() and (out / "classifier.pt").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result))
    assert metrics["status"] == "complete" and metrics["counts"]["pseudo_masks"] == len(slices)
    rows = [json.loads(l) for l in (out / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, FAST["cls_epochs"] + 1))
    assert {"loss", "accuracy", "auc"} <= set(rows[-1])
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert metrics["classifier"]["train_auc"] >= 0.9
    state = torch.load(out / "classifier.pt", weights_only=True)
    assert state["spec"]["name"] == "cam_classifier"
    for sid, lab in zip(slices.ids, slices.labels):
        png = np.asarray(Image.open(out / "pseudo" / sid))
        assert png.shape == slices.images.shape[1:]
        assert set(np.unique(png)) <= {0, 127, 255}
        if lab == "clean":
            assert (png == 0).all()
        else:
            assert (out / "cams" / sid).is_file()
    assert not list(out.rglob("*.tmp"))
    reports = [e for e in events if isinstance(e, EpochReport)]
    assert len(reports) == FAST["cls_epochs"] and isinstance(events[-1], Done)
    maps = reports[-1].maps
    assert maps and all(m["cam"].shape == slices.images.shape[1:] for m in maps.values())
    assert all(0.0 <= m["fused"].min() and m["fused"].max() <= 1.0 for m in maps.values())


def test_pseudo_masks_find_the_lesions_better_than_shuffled_cams(trained):
    slices, out, _, result = trained
    inf = slices.indices("infected")
    cams = {i: np.asarray(Image.open(out / "cams" / slices.ids[i])) / 255.0 for i in inf}
    cfg = Stage1Config(**SYNTH_THRESHOLDS)
    real, shuffled = [], []
    for k, i in enumerate(inf):
        img, gt = slices.images[i], slices.gt_masks[i] > 0
        lung = lung_field(img)
        other = inf[(k + len(inf) // 2) % len(inf)]        # the CAM of another slice: a broken CAM
        real.append(dice(make_pseudo_mask(img, cams[i], lung, cfg) == 1, gt))
        shuffled.append(dice(make_pseudo_mask(img, cams[other], lung, cfg) == 1, gt))
    assert np.mean(real) >= 0.3
    assert np.mean(real) >= np.mean(shuffled) + 0.1
    assert result["ground_truth_report"]["dice_mean"] == pytest.approx(np.mean(real), abs=0.02)


def test_fusion_modes_differ_on_the_epoch_maps(trained):
    _, _, events, _ = trained
    last = [e for e in events if isinstance(e, EpochReport)][-1]
    diffs = [np.abs(m["cam"] - m["fused"]).mean() for m in last.maps.values()]
    assert max(diffs) > 0.01            # the average over epochs is not the last epoch's CAM


def test_fusion_bank_avg_max_none():
    bank = FusionBank(2, (2, 2))
    a, b = np.full((2, 2, 2), 0.2, np.float32), np.full((2, 2, 2), 0.8, np.float32)
    bank.update(np.arange(2), a, np.array([True, False]))
    bank.update(np.arange(2), b, np.array([True, True]))
    bank.update(np.arange(2), a, np.array([True, False]))
    np.testing.assert_allclose(bank.fused("avg")[0], 0.4, atol=1e-6)
    np.testing.assert_allclose(bank.fused("max")[0], 0.8)
    np.testing.assert_allclose(bank.fused("none")[0], 0.2)
    np.testing.assert_allclose(bank.fused("avg")[1], 0.8)       # slice 1 was called infected once only
    assert bank.count.tolist() == [3, 1]
    cams = normalise_cams(torch.tensor([[[0.0, 2.0], [1.0, 0.0]]]))
    assert float(cams.max()) == 1.0


def test_pseudo_mask_convention_and_png_round_trip():
    rng = np.random.default_rng(0)
    img = rng.random((32, 32)).astype(np.float32)
    lung = np.zeros((32, 32), bool)
    lung[4:28, 4:28] = True
    cam = np.zeros((32, 32), np.float32)
    cam[10:20, 10:20] = 1.0
    m = make_pseudo_mask(img, cam, lung, Stage1Config(sal_fg=-99, sal_bg=-100))
    assert set(np.unique(m)) <= {0, 1, IGNORE}
    assert (m[~lung] == 0).all() and (m[12:18, 12:18] == 1).all()
    assert (from_png_values(to_png_values(m)) == m).all()


def test_cancel_mid_epoch_returns_fast_and_leaves_a_consistent_run(tmp_path):
    slices = synthetic_slice_set(n_infected=24, n_clean=24, seed=1, size=32)
    token = CancelToken()
    out = tmp_path / "run"
    job = run_stage1(slices, out, Stage1Config(**{**FAST, "batch_size": 8}), token)
    after_cancel = None
    with pytest.raises(Cancelled):
        for ev in job:
            if after_cancel is not None:
                after_cancel.append(ev)
            if isinstance(ev, Progress) and ev.stage == "classifier" and ev.done == 10:   # epoch 2, mid-way
                token.cancel()
                after_cancel = []
    # it stops at the next batch: no batch ran after the cancel (counted in batches, not seconds)
    assert after_cancel is not None
    assert not [ev for ev in after_cancel if isinstance(ev, Progress) and ev.stage == "classifier"]
    assert json.loads((out / "metrics.json").read_text())["status"] == "cancelled"
    assert json.loads((out / "config.json").read_text())["options"]["fusion"] == "avg"
    rows = [json.loads(l) for l in (out / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    assert not (out / "pseudo").exists() and not list(out.rglob("*.tmp"))


def test_pseudo_rerun_after_an_interruption_logs_each_epoch_once(tmp_path):
    """Issue 15, item 12, for `covidseg pseudo`: the same command again starts stage 1 over; epochs.jsonl then holds
    each classifier epoch once (it used to keep the interrupted attempt's rows and log none of the new ones)."""
    from covidseg_core.pseudo_job import pseudo_job
    from covidseg_core.train_config import TrainConfig

    slices = synthetic_slice_set(n_infected=6, n_clean=6, seed=6, size=32)
    cfg = TrainConfig(size=None, cls_epochs=3, budget_minutes=0, lung_method="threshold")
    out, reference = tmp_path / "run", tmp_path / "reference"
    token = CancelToken()
    with pytest.raises(Cancelled):
        for ev in pseudo_job(slices, out, cfg, device="cpu", cancel=token):
            if isinstance(ev, EpochReport) and ev.epoch == 2:
                token.cancel()
    assert [r["epoch"] for r in RunFolder(out).read_epochs("classifier")] == [1, 2]
    drive(pseudo_job(slices, out, cfg, device="cpu"))
    drive(pseudo_job(slices, reference, cfg, device="cpu"))
    assert [r["epoch"] for r in RunFolder(out).read_epochs()] == [1, 2, 3]
    losses = [[r["loss"] for r in RunFolder(run).read_epochs()] for run in (out, reference)]
    assert losses[0] == losses[1]
    wa = torch.load(out / "classifier.pt", weights_only=True)["model"]
    wb = torch.load(reference / "classifier.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_nan_loss_is_a_training_error(tmp_path):
    slices = synthetic_slice_set(n_infected=8, n_clean=8, seed=2, size=32)
    with pytest.raises(TrainingError, match="NaN|nan|inf"):
        drive(run_stage1(slices, tmp_path / "run", Stage1Config(**{**FAST, "lr": float("inf"), "batch_size": 4})))
    status = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert status["status"] == "failed" and "loss" in status["reason"]


def test_five_classifier_steps_in_all_train(tmp_path):
    """OneCycleLR's one-step warm-up (0.2 x 5 steps) divided by zero; a time budget picks such counts easily."""
    slices = synthetic_slice_set(n_infected=4, n_clean=4, seed=4, size=32)
    result = drive(run_stage1(slices, tmp_path / "run", Stage1Config(**{**FAST, "cls_epochs": 5, "batch_size": 8})))
    assert result["classifier"]["epochs"] == 5


@pytest.mark.parametrize("n_inf,n_clean", [(5, 1), (1, 5), (0, 0)])
def test_too_few_labels(tmp_path, n_inf, n_clean):
    slices = synthetic_slice_set(n_infected=n_inf, n_clean=n_clean + (1 if n_inf + n_clean == 0 else 0), seed=3,
                                 size=32)
    if n_inf + n_clean == 0:
        slices.labels = [None] * len(slices)
    with pytest.raises(LabelError, match="at least 2"):
        drive(run_stage1(slices, tmp_path / "run", Stage1Config(**FAST)))
    assert not (tmp_path / "run").exists()


def test_identical_images_and_bad_options(tmp_path):
    slices = synthetic_slice_set(n_infected=3, n_clean=3, seed=4, size=32)
    slices.images[:] = slices.images[0]
    with pytest.raises(InputError, match="identical"):
        drive(run_stage1(slices, tmp_path / "a", Stage1Config(**FAST)))
    slices = synthetic_slice_set(n_infected=3, n_clean=3, seed=4, size=32)
    with pytest.raises(InputError, match="fusion"):
        drive(run_stage1(slices, tmp_path / "b", Stage1Config(**{**FAST, "fusion": "mean"})))


def test_seeded_runs_are_reproducible(tmp_path):
    slices = synthetic_slice_set(n_infected=6, n_clean=6, seed=5, size=32)
    cfg = Stage1Config(**{**FAST, "cls_epochs": 2, "batch_size": 4})
    a = drive(run_stage1(slices, tmp_path / "a", cfg))
    b = drive(run_stage1(slices, tmp_path / "b", cfg))
    wa = torch.load(tmp_path / "a" / "classifier.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "classifier.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["counts"] == b["counts"]


def test_roc_auc():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)) == pytest.approx(0.75)
    assert roc_auc(np.array([1.0, 1.0]), np.array([0, 1], bool)) == pytest.approx(0.5)
    assert np.isnan(roc_auc(np.array([1.0]), np.array([1], bool)))
