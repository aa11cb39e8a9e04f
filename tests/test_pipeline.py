"""The whole pipeline on the synthetic demo: train (--fast) -> predict -> evaluate, resume, faults.

One `covidseg train --fast` run is shared by the module; the resume/fault tests use a tiny configuration on a
smaller demo so the file stays fast on a shared 2-core CPU.
"""
from __future__ import annotations

import errno
import json
import os
import shutil

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # spinning OpenMP threads crawl on a shared CPU

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from covidseg_core import cli
from covidseg_core.demo import write_demo
from covidseg_core.errors import Cancelled, InputError, RunError
from covidseg_core.results.evaluate import evaluate_folders
from covidseg_core.events import CancelToken, EpochReport, Message, drive
from covidseg_core.infer.predict import predict_job
from covidseg_core.pipeline import train_job
from covidseg_core.results.metrics import summarize
from covidseg_core.runs import RunFolder
from covidseg_core.train_config import FAST_PRESET, TrainConfig


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test of this module runs torch on one thread (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "study"
    write_demo(out)
    return out


@pytest.fixture(scope="module")
def fast_run(demo, tmp_path_factory):
    run = tmp_path_factory.mktemp("fast") / "run"
    assert cli.main(["-q", "train", "--data", str(demo), "--out", str(run), "--fast"]) == 0
    return run


def tiny(**overrides) -> TrainConfig:
    return TrainConfig(**{**dict(size=None, cls_epochs=1, seg_epochs=2, base=8, batch_size=4, lr=5e-3),
                          **overrides})


@pytest.fixture(scope="module")
def tiny_reference(small_demo, tmp_path_factory):
    """An uninterrupted tiny run: what resumed runs and runs on altered ground truth must reproduce."""
    run = tmp_path_factory.mktemp("tiny") / "reference"
    drive(train_job(small_demo, run, tiny()))
    return run


def _weights(run) -> dict:
    return RunFolder(run).load_checkpoint("best.pt")["model"]


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- the main path -----------------------------------------------------------------------------------------

def test_fast_train_predict_evaluate_beats_trivial_baselines(fast_run, demo, tmp_path, capsys):
    pred = tmp_path / "pred"
    assert cli.main(["-q", "predict", "--run", str(fast_run), "--input", str(demo), "--out", str(pred)]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", "--pred", str(pred), "--gt", str(demo / "masks")]) == 0
    scores = json.loads(capsys.readouterr().out)
    for key in ("dice_mean", "sensitivity_mean", "specificity_mean", "dice_pooled", "sensitivity_pooled",
                "specificity_pooled", "n_images", "n_infected"):
        assert key in scores
    assert scores["n_images"] == 32 and scores["n_infected"] > 0

    # masks: same names and sizes as the inputs, 0/255 only
    for img in sorted((demo / "images").iterdir()):
        m = np.asarray(Image.open(pred / img.name))
        assert m.shape == np.asarray(Image.open(img)).shape
        assert set(np.unique(m)) <= {0, 255}

    # trivial baselines a broken pipeline would land on: nothing, and random pixels at the predicted rate
    gts = [np.asarray(Image.open(p)) > 0 for p in sorted((demo / "masks").iterdir())]
    preds = [np.asarray(Image.open(pred / p.name)) > 0 for p in sorted((demo / "masks").iterdir())]
    rate = float(np.mean([p.mean() for p in preds]))
    rng = np.random.default_rng(0)
    zero = summarize([np.zeros_like(g) for g in gts], gts)
    rand = summarize([rng.random(g.shape) < rate for g in gts], gts)
    # The demo is a chest CT (vessels, hila, chest wall, table), with lesions over 1-40% of the lung on 12 of its
    # 32 slices. Measured on this CPU with 1 torch thread, seeds 0 / 1 / 2: dice_mean 0.504 / 0.506 / 0.500,
    # dice_pooled 0.524 / 0.526 / 0.492, 10 / 10 / 11 of the 20 clean slices marked, specificity_pooled 0.99;
    # random pixels at the same rate: dice_pooled 0.01, J 0; all-zero: 0, 0; every lung-like pixel
    # (-980..-300 HU): dice_pooled 0.026, specificity 0.74, J 0.53. The preset before (width 12 from scratch):
    # dice_mean 0.20-0.45, dice_pooled 0.08-0.31, 16-20 clean slices marked.
    assert scores["dice_pooled"] > max(rand["dice_pooled"] + 0.2, 0.3)
    assert scores["dice_mean"] > zero["dice_mean"] + 0.35
    assert scores["clean_with_prediction"] <= 15
    assert finds_the_lesions(scores, rand)


def finds_the_lesions(scores: dict, rand: dict | None = None) -> bool:
    """Masks on the lesions rather than anywhere: sensitivity well above the false-positive rate (Youden's J),
    and few false positives (which predicting the whole lung field would not give)."""
    j = scores["sensitivity_pooled"] + scores["specificity_pooled"] - 1
    j_rand = rand["sensitivity_pooled"] + rand["specificity_pooled"] - 1 if rand else 0.0
    return j > 0.5 and j > j_rand + 0.4 and scores["specificity_pooled"] > 0.85


def test_run_folder_records_config_epochs_checkpoints_metrics(fast_run):
    config = json.loads((fast_run / "config.json").read_text())
    env = config["environment"]
    for key in ("torch", "numpy", "covidseg", "device", "cuda"):
        assert key in env
    assert config["options"]["fast"] is True
    epochs = [json.loads(l) for l in (fast_run / "epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs if e["stage"] == "segmenter"] == list(range(1, FAST_PRESET["seg_epochs"] + 1))
    assert any(e["stage"] == "classifier" for e in epochs)
    metrics = json.loads((fast_run / "metrics.json").read_text())
    assert metrics["complete"] and metrics["stage1"]["status"] == "complete"
    assert (fast_run / "checkpoints" / "best.pt").is_file() and (fast_run / "checkpoints" / "last.pt").is_file()
    assert not [p for p in fast_run.rglob(".tmp-*")]
    assert len(list((fast_run / "pseudo").glob("*.png"))) == 32
    # the segmenter exported for ONNX Runtime, its masks checked against PyTorch's (issue 14)
    onnx = json.loads((fast_run / "segmenter.onnx.json").read_text())
    assert onnx["status"] == "ok" and metrics["onnx"]["status"] == "ok" and (fast_run / "segmenter.onnx").is_file()
    assert onnx["parity"]["mask_pixels_differing"] <= 0.001 and onnx["input_hw"] == [128, 128]


def test_rerunning_a_finished_run_does_not_train_again(fast_run, demo):
    before = _weights(fast_run)
    events = []
    cfg = TrainConfig(**{k: v for k, v in json.loads((fast_run / "config.json").read_text())["options"].items()
                         if k != "model_spec"})
    result = drive(train_job(demo, fast_run, cfg), events.append)
    assert result["complete"]
    assert not any(isinstance(e, EpochReport) for e in events)
    assert _same_weights(before, _weights(fast_run))


def test_predict_volume_writes_nifti_in_source_geometry(fast_run, demo, tmp_path):
    src = demo / "volume" / "ct.nii.gz"
    summary = drive(predict_job(fast_run, src, tmp_path))
    assert summary["engine"] == "onnxruntime"
    out = tmp_path / "ct_mask.nii.gz"
    assert summary["out"] == str(out) and out.is_file()
    a, b = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetSpacing(), b.GetSpacing()) and np.allclose(a.GetOrigin(), b.GetOrigin())
    assert np.allclose(a.GetDirection(), b.GetDirection())
    mask = sitk.GetArrayFromImage(b)
    assert set(np.unique(mask)) <= {0, 1} and mask.any()
    # the volume goes through the same windowing as the PNG slices: it finds the lesions as they do
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(demo / "volume" / "infection.nii.gz"))) > 0
    scores = summarize(list(mask), list(truth))
    assert finds_the_lesions(scores) and scores["dice_pooled"] > 0.04, scores


def test_onnx_runtime_and_pytorch_masks_agree_on_the_demo_volume(fast_run, demo):
    """The trained run's masks on every slice of the volume, through both engines: within 0.1 % of the pixels."""
    from covidseg_core.infer.model import load_run_model
    from covidseg_core.infer.predict import predict_masks
    from covidseg_core.io.loader import open_study

    images = open_study(demo / "volume" / "ct.nii.gz").unit_range()
    onnx_lm, torch_lm = load_run_model(fast_run, "cpu"), load_run_model(fast_run, "cpu", "fp32", engine="torch")
    assert onnx_lm.engine == "onnxruntime" and torch_lm.engine == "pytorch"
    got, ref = drive(predict_masks(onnx_lm, images)), drive(predict_masks(torch_lm, images))
    assert ref.any() and (got != ref).mean() <= 0.001


# --- awkward inputs ----------------------------------------------------------------------------------------

def test_predict_on_an_empty_folder_is_an_input_error(fast_run, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        drive(predict_job(fast_run, tmp_path / "empty", tmp_path / "out"))


def test_predict_on_a_one_slice_volume(fast_run, demo, tmp_path):
    src = sitk.ReadImage(str(demo / "volume" / "ct.nii.gz"))
    one = src[:, :, 16:17]
    path = tmp_path / "one.nii.gz"
    sitk.WriteImage(one, str(path))
    drive(predict_job(fast_run, path, tmp_path / "out"))
    out = sitk.ReadImage(str(tmp_path / "out" / "one_mask.nii.gz"))
    assert out.GetSize() == one.GetSize() and np.allclose(out.GetOrigin(), one.GetOrigin())


def test_predict_on_images_of_other_sizes(fast_run, demo, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    img = Image.open(demo / "images" / "demo_016.png")
    img.resize((200, 150)).save(folder / "wide.png")
    img.crop((10, 0, 110, 128)).save(folder / "narrow.png")
    img.convert("L").save(folder / "same.jpg")
    drive(predict_job(fast_run, folder, tmp_path / "out"))
    assert np.asarray(Image.open(tmp_path / "out" / "wide.png")).shape == (150, 200)
    assert np.asarray(Image.open(tmp_path / "out" / "narrow.png")).shape == (128, 100)
    assert np.asarray(Image.open(tmp_path / "out" / "same.png")).shape == (128, 128)


# --- resume, reproducibility, what may train -----------------------------------------------------------------

def _interrupt_after_segmenter_epoch(job, epoch: int, cancel: CancelToken):
    for event in job:
        if isinstance(event, EpochReport) and event.stage == "segmenter" and event.epoch == epoch:
            cancel.cancel()


def test_interrupted_training_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(
        small_demo, tiny_reference, tmp_path):
    resumed = tmp_path / "resumed"
    cancel = CancelToken()
    with pytest.raises(Cancelled):
        _interrupt_after_segmenter_epoch(train_job(small_demo, resumed, tiny(), cancel=cancel), 1, cancel)
    assert RunFolder(resumed).load_checkpoint("last.pt")["epoch"] == 1
    events = []
    drive(train_job(small_demo, resumed, tiny()), events.append)
    texts = [e.text for e in events if isinstance(e, Message)]
    assert any("stage 1 already finished" in t for t in texts)
    assert any("resuming the segmenter from epoch 1" in t for t in texts)
    assert [e.epoch for e in events if isinstance(e, EpochReport)] == [2]
    seg_epochs = [r["epoch"] for r in RunFolder(resumed).read_epochs("segmenter")]
    assert seg_epochs == [1, 2]
    assert _same_weights(_weights(tiny_reference), _weights(resumed))
    last = RunFolder(resumed).load_checkpoint("last.pt")["model"]
    assert _same_weights(RunFolder(tiny_reference).load_checkpoint("last.pt")["model"], last)

    # resuming with other options is refused with a clear message
    with pytest.raises(RunError, match="other options"):
        drive(train_job(small_demo, resumed, tiny(fusion="max")))


def test_interrupted_stage1_resumes_without_duplicate_epoch_rows(small_demo, tiny_reference, tmp_path):
    """Issue 15, item 12: stage 1 has no checkpoint mid-way, so a resume starts it over; the epochs the interrupted
    attempt logged used to stay in epochs.jsonl next to the new ones."""
    resumed = tmp_path / "resumed"
    cancel = CancelToken()
    with pytest.raises(Cancelled):
        for event in train_job(small_demo, resumed, tiny(), cancel=cancel):
            if isinstance(event, EpochReport) and event.stage == "classifier" and event.epoch == 1:
                cancel.cancel()          # stops at the pseudo masks: stage 1 is left unfinished
    assert not (resumed / "stage1.json").exists()
    assert [r["epoch"] for r in RunFolder(resumed).read_epochs("classifier")] == [1]
    events = []
    drive(train_job(small_demo, resumed, tiny()), events.append)
    assert not any("stage 1 already finished" in e.text for e in events if isinstance(e, Message))
    rows = [(r["stage"], r["epoch"]) for r in RunFolder(resumed).read_epochs()]
    assert rows == [("classifier", 1), ("segmenter", 1), ("segmenter", 2)]
    assert rows == [(r["stage"], r["epoch"]) for r in RunFolder(tiny_reference).read_epochs()]
    assert _same_weights(_weights(tiny_reference), _weights(resumed))


def test_a_refused_label_check_leaves_no_run_folder_and_the_corrected_run_trains(small_demo, tiny_reference,
                                                                                  tmp_path, capsys):
    """Issue 15, item 10: labels (and pixel labels) are checked before the run folder is made. A refused run used to
    leave a config.json stub, and the corrected command was then refused as "trained on other data"."""
    data = tmp_path / "study"
    shutil.copytree(small_demo, data)
    good = (data / "labels.csv").read_text()
    assert ",infected," in good
    (data / "labels.csv").write_text(good.replace(",infected,", ",clean,"))
    run = tmp_path / "run"
    train = ["-q", "train", "--data", str(data), "--out", str(run), "--cls-epochs", "1", "--seg-epochs", "1"]
    assert cli.main(train) == 2
    assert "found 0 infected" in capsys.readouterr().err
    assert not run.exists()

    (data / "labels.csv").write_text(good)
    stray = tmp_path / "pixel_labels"
    stray.mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(stray / "not_a_slice.png")
    with pytest.raises(InputError, match="match no image"):
        drive(train_job(data, run, tiny(pixel_labels=str(stray))))
    assert not run.exists()

    result = drive(train_job(data, run, tiny()))
    assert result["complete"]
    assert _same_weights(_weights(tiny_reference), _weights(run))


def test_ground_truth_masks_never_train(small_demo, tiny_reference, tmp_path):
    reference = tiny_reference
    corrupted = tmp_path / "corrupted_data"
    shutil.copytree(small_demo, corrupted)
    rng = np.random.default_rng(1)
    for p in (corrupted / "masks").iterdir():
        Image.fromarray(((rng.random((64, 64)) < 0.5) * 255).astype(np.uint8)).save(p)
    other = tmp_path / "other"
    drive(train_job(corrupted, other, tiny()))
    assert _same_weights(_weights(reference), _weights(other))

    # control: the same masks given as pixel labels do train, so the comparison above can fail
    supervised = tmp_path / "supervised"
    drive(train_job(small_demo, supervised, tiny(seg_epochs=1, pixel_labels=str(corrupted / "masks"))))
    assert json.loads((supervised / "metrics.json").read_text())["segmenter"]["n_pixel_labelled"] == 16
    assert not _same_weights(_weights(reference), _weights(supervised))


# --- faults ------------------------------------------------------------------------------------------------

def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(small_demo, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real_save = torch.save
    calls = {"last": 0}

    def failing_save(obj, f, *args, **kwargs):
        if str(f).endswith("last.pt"):
            calls["last"] += 1
            if calls["last"] == 2:
                with open(f, "wb") as fh:        # half a file, then the disk is full
                    fh.write(b"PK\x03\x04 partial")
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(RunError, match="disk is full"):
        drive(train_job(small_demo, run, tiny()))
    monkeypatch.setattr(torch, "save", real_save)
    state = RunFolder(run).load_checkpoint("last.pt")
    assert state["epoch"] == 1
    assert not list((run / "checkpoints").glob(".tmp-*"))
    # and the run resumes from there
    result = drive(train_job(small_demo, run, tiny()))
    assert result["complete"] and result["segmenter"]["epochs"] == 2


def test_run_folder_deleted_mid_training_is_a_clear_error(small_demo, tmp_path):
    run = tmp_path / "run"
    job = train_job(small_demo, run, tiny())
    with pytest.raises(RunError, match="deleted or moved"):
        for event in job:
            if isinstance(event, EpochReport) and event.stage == "segmenter" and event.epoch == 1:
                shutil.rmtree(run)
    assert not run.exists() or not (run / "config.json").exists()


def test_predict_with_a_missing_or_unfinished_run(small_demo, tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        drive(predict_job(tmp_path / "nope", small_demo, tmp_path / "out"))
    half = tmp_path / "half"
    half.mkdir()
    (half / "pseudo").mkdir()
    with pytest.raises(RunError, match="config.json"):
        drive(predict_job(half, small_demo, tmp_path / "out"))
    # a run whose config was written but no segmenter epoch finished
    RunFolder(tmp_path / "started").create(tiny().options(), {}, "cpu")
    with pytest.raises(RunError, match="checkpoint"):
        drive(predict_job(tmp_path / "started", small_demo, tmp_path / "out"))
    # a torn checkpoint is not taken as good
    (tmp_path / "started" / "checkpoints").mkdir()
    (tmp_path / "started" / "checkpoints" / "best.pt").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(RunError, match="cannot be read"):
        drive(predict_job(tmp_path / "started", small_demo, tmp_path / "out"))


def test_run_from_another_version_is_refused(tmp_path):
    run = RunFolder(tmp_path / "old")
    run.create(tiny().options(), {}, "cpu")
    config = json.loads(run.config_path.read_text())
    config["environment"]["covidseg"] = "0.0.1"
    run.config_path.write_text(json.dumps(config))
    with pytest.raises(RunError, match="made by covidseg 0.0.1"):
        run.read_config()
    config["format"] = 99
    run.config_path.write_text(json.dumps(config))
    with pytest.raises(RunError, match="format 99"):
        run.read_config()


def test_evaluate_reports_missing_predictions(demo, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    shutil.copy(demo / "masks" / "demo_000.png", pred / "demo_000.png")
    with pytest.raises(InputError, match="31 of 32 ground-truth masks have no prediction"):
        evaluate_folders(pred, demo / "masks")
