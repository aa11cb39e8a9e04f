"""The pipeline commands of `covidseg`: user errors exit 2 with one line on stderr, results are JSON on stdout."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from covidseg_core import cli
from covidseg_core.demo import write_demo


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(["-q", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *fragments: str) -> None:
    assert rc == 2, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("covidseg: error:")
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "study"
    write_demo(out, n_slices=8, size=48)
    return out


def _write_masks(folder, masks: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, m in masks.items():
        Image.fromarray((np.asarray(m) > 0).astype(np.uint8) * 255).save(folder / name)


def test_evaluate_prints_one_json_object(tmp_path, capsys):
    gt = {"a.png": np.zeros((8, 8)), "b.png": np.zeros((8, 8))}
    gt["b.png"][2:6, 2:6] = 1
    pred = {"a.png": np.zeros((8, 8)), "b.png": np.zeros((8, 8))}
    pred["b.png"][2:6, 2:4] = 1
    _write_masks(tmp_path / "gt", gt)
    _write_masks(tmp_path / "pred", pred)
    rc, out, _ = run_cli(capsys, "evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt")
    assert rc == 0
    scores = json.loads(out)
    assert scores["n_images"] == 2 and scores["n_infected"] == 1
    assert scores["dice_mean"] == pytest.approx(2 * 8 / (8 + 16))
    assert scores["sensitivity_mean"] == pytest.approx(0.5)
    assert scores["specificity_pooled"] == pytest.approx(1.0)


def test_evaluate_missing_predictions_and_size_mismatch(tmp_path, capsys):
    _write_masks(tmp_path / "gt", {"a.png": np.ones((8, 8)), "b.png": np.ones((8, 8))})
    _write_masks(tmp_path / "pred", {"a.png": np.ones((8, 8))})
    rc, _, err = run_cli(capsys, "evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt")
    assert_one_line_error(rc, err, "1 of 2 ground-truth masks have no prediction", "b.png")
    _write_masks(tmp_path / "pred", {"b.png": np.ones((4, 8))})
    rc, _, err = run_cli(capsys, "evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt")
    assert_one_line_error(rc, err, "b.png is 8x4")
    rc, _, err = run_cli(capsys, "evaluate", "--pred", tmp_path / "nope", "--gt", tmp_path / "gt")
    assert_one_line_error(rc, err, "does not exist")


def test_train_error_paths(demo, tmp_path, capsys):
    rc, _, err = run_cli(capsys, "train", "--data", tmp_path / "missing", "--out", tmp_path / "run", "--fast")
    assert_one_line_error(rc, err, "does not exist")

    not_a_run = tmp_path / "busy"
    not_a_run.mkdir()
    (not_a_run / "notes.txt").write_text("mine")
    # labels stage 1 accepts (the small demo has one infected slice), so the folder check is what refuses
    names = sorted(p.name for p in (demo / "images").iterdir())
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n" + "".join(f"{n},{'infected' if i < 2 else 'clean'}\n"
                                               for i, n in enumerate(names)))
    rc, _, err = run_cli(capsys, "train", "--data", demo, "--labels", labels, "--out", not_a_run, "--fast")
    assert_one_line_error(rc, err, "not a run folder")

    rc, _, err = run_cli(capsys, "train", "--data", demo, "--out", tmp_path / "r2", "--fast",
                         "--pixel-labels", tmp_path / "no-such-masks")
    assert_one_line_error(rc, err, "--pixel-labels")

    if not torch.cuda.is_available():
        rc, _, err = run_cli(capsys, "train", "--data", demo, "--out", tmp_path / "r3", "--device", "cuda")
        assert_one_line_error(rc, err, "CUDA")


def test_train_with_too_few_labels_is_one_line(demo, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    import shutil
    shutil.copytree(demo / "images", tmp_path / "data" / "images")
    names = sorted(p.name for p in (demo / "images").iterdir())
    (tmp_path / "data" / "labels.csv").write_text("file,label\n" + "".join(f"{n},clean\n" for n in names))
    rc, _, err = run_cli(capsys, "train", "--data", tmp_path / "data", "--out", tmp_path / "run", "--fast")
    assert_one_line_error(rc, err, "infected")


def test_predict_error_paths(demo, tmp_path, capsys):
    rc, _, err = run_cli(capsys, "predict", "--run", tmp_path / "no-run", "--input", demo, "--out", tmp_path / "o")
    assert_one_line_error(rc, err, "does not exist")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "pseudo").mkdir()
    rc, _, err = run_cli(capsys, "predict", "--run", tmp_path / "half", "--input", demo, "--out", tmp_path / "o")
    assert_one_line_error(rc, err, "config.json")
    rc, _, err = run_cli(capsys, "predict", "--run", tmp_path / "half", "--input", tmp_path / "nothing-here",
                         "--out", tmp_path / "o")
    assert_one_line_error(rc, err, "does not exist")


def test_bad_numbers_are_usage_errors(demo, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--data", str(demo), "--out", str(tmp_path / "r"), "--seg-epochs", "0"])
    assert exc.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err
    for share in ("1.5", "-0.1", "nan", "half"):
        with pytest.raises(SystemExit) as exc:
            cli.main(["train", "--data", str(demo), "--out", str(tmp_path / "r"), "--prior-share", share])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "--prior-share" in err and "Traceback" not in err


def test_pseudo_writes_stage1_outputs(tmp_path, capsys):
    data = tmp_path / "study"
    write_demo(data, n_slices=12, size=48)
    rc, out, err = run_cli(capsys, "pseudo", "--data", data, "--out", tmp_path / "run", "--size", "48",
                           "--cls-epochs", "1")
    assert rc == 0, err
    result = json.loads(out)
    assert result["status"] == "complete"
    names = sorted(p.name for p in (data / "images").iterdir())
    assert sorted(p.name for p in (tmp_path / "run" / "pseudo").iterdir()) == names
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_gui_command_launches_the_app_as_its_own_program(monkeypatch):
    import subprocess
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda argv: calls.append(argv) or 0)
    assert cli.main(["gui", "some/study.nii.gz"]) == 0
    assert calls and calls[0][1:] == ["-m", "app", "some/study.nii.gz"]


def test_gui_command_without_the_gui_extras_says_how_to_install_them(monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "PySide6" else real(name, *a))
    assert cli.main(["gui"]) == 2
    err = capsys.readouterr().err
    assert "PySide6" in err and "pip install 'covidseg-assist[gui]'" in err
