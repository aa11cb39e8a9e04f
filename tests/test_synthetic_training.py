"""Synthetic lesions in use: `covidseg synth` (layout, units, refusals) and `train --synthetic` (modes, the
fall-back without clean slices, the report), plus the augmentation and post-processing they rely on."""
from __future__ import annotations

import csv
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from covidseg_core import cli
from covidseg_core.events import Message, drive
from covidseg_core.imaging.augment import augment_batch, flip
from covidseg_core.infer.postprocess import drop_specks, finish_masks
from covidseg_core.pipeline import train_job
from covidseg_core.train_config import TrainConfig


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test of this module runs torch on one thread (see conftest.one_torch_thread)."""


def tiny(**overrides) -> TrainConfig:
    return TrainConfig(**{**dict(size=None, cls_epochs=1, seg_epochs=2, base=8, batch_size=4, lr=5e-3),
                          **overrides})


def test_synth_writes_images_and_exact_masks_outside_the_data(small_demo, tmp_path, capsys):
    before = sorted(p.name for p in (small_demo / "images").iterdir())
    out = tmp_path / "synth"
    assert cli.main(["-q", "synth", "--data", str(small_demo), "--out", str(out), "-n", "6", "--seed", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 6 and summary["units"] == "8-bit" and summary["lesion_pixels"] > 0
    rows = list(csv.DictReader(open(out / "labels.csv")))
    assert [r["label"] for r in rows] == ["infected"] * 6
    clean = {r["file"] for r in csv.DictReader(open(small_demo / "labels.csv")) if r["label"] == "clean"}
    for r in rows:
        img = np.asarray(Image.open(out / "images" / r["file"])).astype(int)
        mask = np.asarray(Image.open(out / "masks" / r["file"])) > 0
        src = np.asarray(Image.open(small_demo / "images" / r["drawn_on"])).astype(int)
        assert r["drawn_on"] in clean and mask.any()
        assert (np.abs(img - src)[~mask] <= 1).all(), "a pixel outside the lesion mask changed"
    assert sorted(p.name for p in (small_demo / "images").iterdir()) == before
    # the same seed, the same lesions
    again = tmp_path / "again"
    assert cli.main(["-q", "synth", "--data", str(small_demo), "--out", str(again), "-n", "6", "--seed", "3"]) == 0
    capsys.readouterr()
    assert all(np.array_equal(np.asarray(Image.open(out / "masks" / r["file"])),
                              np.asarray(Image.open(again / "masks" / r["file"]))) for r in rows)


def test_synth_on_a_volume_writes_hu_nifti(small_demo, tmp_path, capsys):
    volume = next((small_demo / "volume").glob("ct.nii*"))
    out = tmp_path / "vol"
    assert cli.main(["-q", "synth", "--data", str(volume), "--out", str(out), "-n", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["units"] == "HU"
    img = sitk.ReadImage(str(out / "synthetic.nii.gz"))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "synthetic_mask.nii.gz")))
    src = sitk.ReadImage(str(volume))
    assert img.GetSize()[:2] == src.GetSize()[:2] and img.GetSpacing() == pytest.approx(src.GetSpacing())
    hu = sitk.GetArrayFromImage(img).astype(float)
    assert mask.any() and hu[mask > 0].mean() > -900 and hu.min() >= -1100


@pytest.mark.parametrize("args, says", [(["-n", "0"], "-n 0 is out of range"), (["-n", "20000"], "out of range"),
                                        (["--seed", "-1"], "--seed -1 is out of range")])
def test_synth_refuses_out_of_range_options(small_demo, tmp_path, capsys, args, says):
    assert cli.main(["-q", "synth", "--data", str(small_demo), "--out", str(tmp_path / "o"), *args]) == 2
    assert says in capsys.readouterr().err


def test_synth_never_writes_into_the_data_set(small_demo, capsys):
    assert cli.main(["-q", "synth", "--data", str(small_demo), "--out", str(small_demo / "synth")]) == 2
    assert "nothing may be written there" in capsys.readouterr().err
    assert not (small_demo / "synth").exists()


@pytest.mark.parametrize("mode", ["auto", "only"])
def test_train_with_synthetic_lesions(small_demo, tmp_path, mode):
    events = []
    metrics = drive(train_job(small_demo, tmp_path / "run", tiny(synthetic=mode), device="cpu"), events.append)
    report = metrics["segmenter"]["synthetic"]
    assert report["mode"] == mode and report["used"] > 0
    if mode == "only":       # label-free: the infected slices' pseudo masks did not train
        assert metrics["segmenter"]["n_pseudo"] == metrics["stage1"]["counts"]["clean"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["options"]["synthetic"] == mode


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_training_on_given_masks_mixes_in_synthetic_lesions_only_when_asked(small_demo, tmp_path, mode):
    """The full-supervision ceiling of the default's recipe: expert masks plus synthetic lesions on clean slices."""
    from covidseg_core.data import load_slice_set
    from covidseg_core.pipeline import train_on_targets

    slices = load_slice_set(small_demo)
    metrics = drive(train_on_targets(slices, slices.gt_masks.astype(np.uint8), tmp_path / "run", tiny(),
                                     device="cpu", synthetic=mode), lambda e: None)
    report = metrics["segmenter"]["synthetic"]
    assert report["mode"] == mode and (report.get("used", 0) > 0) == (mode == "auto")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["options"]["synthetic"] == mode


def test_no_usable_clean_slice_falls_back_to_the_papers_method_with_a_note(small_demo, tmp_path):
    """Stage 1 needs both classes, so two slices stay labelled clean, but neither shows any lung."""
    from covidseg_core.data import load_slice_set

    slices = load_slice_set(small_demo)
    clean = [i for i, lab in enumerate(slices.labels) if lab == "clean"]
    for i in clean[2:]:
        slices.labels[i] = None
    for i in clean[:2]:
        slices.images[i] = 0.45            # uniform soft tissue: no lung field
    events = []
    metrics = drive(train_job(small_demo, tmp_path / "run", tiny(synthetic="auto"), device="cpu", slices=slices),
                    events.append)
    assert metrics["segmenter"]["synthetic"]["mode"] == "off"
    assert any(isinstance(e, Message) and "synthetic" in e.text for e in events)


def test_flips_move_labels_with_images():
    x = torch.arange(2 * 6 * 4, dtype=torch.float32).view(2, 1, 6, 4)
    y = (x[:, 0] > 20).to(torch.uint8) * 255
    for seed in range(5):
        fx, fy = flip(x, y, np.random.default_rng(seed))
        assert torch.equal((fx[:, 0] > 20).to(torch.uint8) * 255, fy)


def test_augmentation_keeps_label_values():
    rng = np.random.default_rng(0)
    x = torch.rand(4, 1, 32, 24)
    y = torch.zeros(4, 32, 24, dtype=torch.uint8)
    y[:, 8:20, 6:18] = 1
    y[:, 10:12, 8:10] = 255
    ax, ay = augment_batch(x, y, rng)
    assert ax.shape == x.shape and ay.shape == y.shape
    assert set(ay.unique().tolist()) <= {0, 1, 255} and float(ax.min()) >= 0 and float(ax.max()) <= 1


def test_masks_stay_in_the_lungs_and_lose_their_specks():
    m = np.zeros((1, 64, 64), bool)
    m[0, 10:30, 10:30] = True          # a lesion, half of it outside the lung
    m[0, 50, 50] = True                # a speck
    lungs = np.zeros_like(m)
    lungs[0, :, :20] = True
    out = finish_masks(m, lungs)
    assert out[0, 10:30, 10:20].all() and not out[0, :, 20:].any() and out[0, 50, 50] == 0
    assert drop_specks(m[0]).sum() == 400
