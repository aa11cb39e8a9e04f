"""The segmenter on ONNX Runtime (issue 14, item 1): exported into the run folder with a parity check, used by
`predict` on the CPU, PyTorch with a note when onnxruntime is missing or the file is damaged or stale. Parity:
the masks of both engines agree within 0.1 % of the pixels, on a synthetic slice and on a real zenodo slice."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from covidseg_core.events import CancelToken, Message, drive
from covidseg_core.infer import onnx_engine, onnx_export
from covidseg_core.infer.model import load_run_model
from covidseg_core.infer.predict import predict_job, predict_masks, predict_probabilities
from covidseg_core.models.segmenter import build_from_spec
from covidseg_core.runs import BEST, RunFolder
from covidseg_core.train_config import TrainConfig

pytest.importorskip("onnxruntime")


def demo_slices(n=3, size=64):
    from covidseg_core.demo import make_demo_volume
    from covidseg_core.imaging.windowing import to_unit_range

    hu, _, _ = make_demo_volume(seed=0, n_slices=8, size=size)
    return to_unit_range(hu[2:2 + n].astype(np.float32), is_hu=True)


def make_run(path, sample01, size=64, base=8, seed=0, gain=1.0):
    """A run holding a seeded untrained segmenter whose output bias is set so that its mask covers about half of
    `sample01` at the run's working size: a parity check on an all-0 or all-1 mask would prove nothing. `gain`
    scales its output layer (an untrained network's probabilities barely move from 0.5)."""
    from covidseg_core.imaging.resize import resize_stack, working_shape

    torch.manual_seed(seed)
    cfg = TrainConfig(size=size, base=base)
    model = build_from_spec(cfg.model_spec()).eval()
    x = resize_stack(torch.from_numpy(sample01)[:, None], working_shape(*sample01.shape[1:], size))
    with torch.no_grad():
        model.head.weight *= gain
        model.head.bias -= model(x).median()
    run = RunFolder(path)
    run.create({**cfg.options(), "lung_method": None}, {"path": "synthetic"}, "cpu")
    run.save_checkpoint({"model": model.state_dict(), "epoch": 1, "spec": cfg.model_spec()}, BEST)
    return path


def masks_of(lm, images01):
    return drive(predict_probabilities(lm, images01)) >= 0.5


def check_parity(run, images01):
    info = onnx_export.export_onnx(run, images01)
    assert info["status"] == "ok", info
    assert RunFolder(run).onnx_path.is_file()
    assert json.loads(RunFolder(run).onnx_info_path.read_text())["checkpoint_sha256"] == info["checkpoint_sha256"]
    assert info["parity"]["mask_pixels_differing"] <= 0.001
    onnx_lm = load_run_model(run, "cpu", "fp32")
    torch_lm = load_run_model(run, "cpu", "fp32", engine="torch")
    assert onnx_lm.engine == "onnxruntime" and torch_lm.engine == "pytorch"
    got, ref = masks_of(onnx_lm, images01), masks_of(torch_lm, images01)
    assert 0.2 < ref.mean() < 0.8                # both classes are there: the comparison means something
    assert (got != ref).mean() <= 0.001
    return info


def test_export_and_parity_on_synthetic_slices(tmp_path, one_torch_thread):
    images = demo_slices()
    run = make_run(tmp_path / "run", images)
    check_parity(run, images)


def test_parity_on_a_real_zenodo_slice(tmp_path, shared_data, one_torch_thread):
    from covidseg_core.imaging.windowing import to_unit_range
    from covidseg_core.io.images import read_gray

    folder = shared_data / "zenodo-dev" / "images"
    files = sorted(folder.glob("*.png"))
    assert files
    a = read_gray(files[len(files) // 2])
    images = to_unit_range(a[None].astype(np.float32), is_hu=False, bits=16 if a.dtype == np.uint16 else 8)
    run = make_run(tmp_path / "run", images, size=128)
    check_parity(run, images)


@pytest.fixture
def exported_run(tmp_path, one_torch_thread):
    images = demo_slices(n=2)
    run = make_run(tmp_path / "run", images)
    assert onnx_export.export_onnx(run, images)["status"] == "ok"
    return run, images


def write_volume(tmp_path):
    import SimpleITK as sitk

    from covidseg_core.demo import make_demo_volume
    hu, _, _ = make_demo_volume(seed=1, n_slices=4, size=64)
    vol = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(hu.astype(np.int16)), str(vol))
    return vol


def test_predict_uses_onnx_runtime_on_the_cpu(tmp_path, exported_run):
    run, _ = exported_run
    vol = write_volume(tmp_path)
    events = []
    summary = drive(predict_job(run, vol, tmp_path / "out", device="cpu"), on_event=events.append)
    assert summary["engine"] == "onnxruntime"
    assert any("onnxruntime" in ev.text for ev in events if isinstance(ev, Message))
    # explicit bf16 keeps PyTorch (ONNX Runtime runs fp32)
    summary = drive(predict_job(run, vol, tmp_path / "out2", device="cpu", precision="bf16"))
    assert summary["engine"] == "pytorch"


def test_damaged_onnx_file_falls_back_to_pytorch_with_a_note(tmp_path, exported_run):
    run, images = exported_run
    RunFolder(run).onnx_path.write_bytes(b"not an onnx graph")
    lm = load_run_model(run, "cpu", "fp32")
    assert lm.engine == "pytorch" and "cannot be loaded" in lm.note
    assert masks_of(lm, images).shape == images.shape
    events = []
    summary = drive(predict_job(run, write_volume(tmp_path), tmp_path / "out", device="cpu"), on_event=events.append)
    assert summary["engine"] == "pytorch"
    assert any(ev.level == "warning" and "cannot be loaded" in ev.text for ev in events if isinstance(ev, Message))


def test_missing_onnxruntime_falls_back_to_pytorch_with_a_note(exported_run, monkeypatch):
    run, _ = exported_run
    monkeypatch.setattr(onnx_engine, "onnxruntime_available", lambda: False)
    lm = load_run_model(run, "cpu", "fp32")
    assert lm.engine == "pytorch" and "onnxruntime is not installed" in lm.note


def test_an_export_of_another_checkpoint_is_not_used(exported_run):
    run, _ = exported_run
    folder = RunFolder(run)
    state = folder.load_checkpoint(BEST)
    state["model"]["head.bias"] = state["model"]["head.bias"] + 1.0
    folder.save_checkpoint(state, BEST)
    lm = load_run_model(run, "cpu", "fp32")
    assert lm.engine == "pytorch" and "another checkpoint" in lm.note


def test_a_run_without_export_predicts_with_pytorch_silently(tmp_path, one_torch_thread):
    run = make_run(tmp_path / "run", demo_slices(n=1))
    lm = load_run_model(run, "cpu", "fp32")
    assert lm.engine == "pytorch" and lm.note is None


def test_export_without_onnxruntime_is_skipped_not_failed(tmp_path, monkeypatch, one_torch_thread):
    images = demo_slices(n=1)
    run = make_run(tmp_path / "run", images)
    monkeypatch.setattr(onnx_engine, "onnxruntime_available", lambda: False)
    info = onnx_export.export_onnx(run, images)
    assert info["status"] == "skipped" and not RunFolder(run).onnx_path.exists()


def test_a_job_on_a_worker_thread_exports_in_a_child_process(tmp_path, monkeypatch):
    """The exporter holds the GIL for up to a second: the app's job (a worker thread beside the GUI's) exports in a
    child process, the command line (main thread) in its own."""
    import threading

    images = demo_slices()
    run = make_run(tmp_path / "run", images)
    used = []
    monkeypatch.setattr(onnx_export, "export_onnx_in_child",
                        lambda *a: used.append("child") or {"status": "skipped", "reason": "test"})
    monkeypatch.setattr(onnx_export, "export_onnx", lambda *a: used.append("here") or {"status": "skipped",
                                                                                        "reason": "test"})
    job = onnx_export.run_onnx_export(RunFolder(run), images, CancelToken())
    drive(job)
    worker = threading.Thread(target=lambda: drive(onnx_export.run_onnx_export(RunFolder(run), images,
                                                                               CancelToken())))
    worker.start()
    worker.join()
    assert used == ["here", "child"]


def test_the_child_process_export_writes_the_same_record(tmp_path):
    images = demo_slices()
    run = make_run(tmp_path / "run", images)
    info = onnx_export.export_onnx_in_child(run, images)
    assert info["status"] == "ok", info
    assert RunFolder(run).onnx_path.is_file()
    assert json.loads(RunFolder(run).onnx_info_path.read_text()) == info
    assert load_run_model(run, "cpu", "fp32").engine == "onnxruntime"


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_flip_average_is_the_mean_of_a_slice_and_its_mirror_image(tmp_path, engine):
    images = np.random.default_rng(0).random((3, 64, 64), dtype=np.float32)     # not mirror-symmetric, as the demo is
    run = make_run(tmp_path / "run", images, gain=1e4)
    if engine == "onnx":
        onnx_export.export_onnx(run, images)
    lm = load_run_model(run, "cpu", "fp32", engine=engine)
    plain = drive(predict_probabilities(lm, images))
    mirrored = drive(predict_probabilities(lm, np.ascontiguousarray(images[:, :, ::-1])))[:, :, ::-1]
    averaged = drive(predict_probabilities(lm, images, batch_size=2, flip_average=True))
    assert np.abs(plain - mirrored).max() > 0.05          # the network is not symmetric: the test can fail
    np.testing.assert_allclose(averaged, (plain + mirrored) / 2, atol=1e-4)


def test_masks_average_each_slice_with_its_mirror_image_by_default(tmp_path):
    """What predict, the app and the project runs show (docs/results.md, "Mirror averaging of the segmenter")."""
    from covidseg_core.infer.postprocess import finish_masks

    images = np.random.default_rng(2).random((3, 64, 64), dtype=np.float32)
    run = make_run(tmp_path / "run", images, gain=1e4)
    lm = load_run_model(run, "cpu", "fp32", engine="torch")
    averaged = drive(predict_probabilities(lm, images, flip_average=True))
    masks = drive(predict_masks(lm, images))
    np.testing.assert_array_equal(masks, finish_masks(averaged >= 0.5, None))
    assert not np.array_equal(masks, drive(predict_masks(lm, images, flip_average=False)))


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_two_scales_are_the_mean_of_the_slice_worked_at_each_size(tmp_path, engine):
    import dataclasses

    images = np.random.default_rng(1).random((3, 64, 64), dtype=np.float32)
    run = make_run(tmp_path / "run", images, gain=1e4)
    if engine == "onnx":
        onnx_export.export_onnx(run, images)
    lm = load_run_model(run, "cpu", "fp32", engine=engine)
    assert lm.engine == ("onnxruntime" if engine == "onnx" else "pytorch")
    own = drive(predict_probabilities(lm, images))
    magnified = drive(predict_probabilities(dataclasses.replace(lm, size=80), images))   # 1.25 x 64
    both = drive(predict_probabilities(lm, images, batch_size=2, scales=(1.0, 1.25)))
    assert np.abs(own - magnified).max() > 0.05           # the sizes disagree: the test can fail
    np.testing.assert_allclose(both, (own + magnified) / 2, atol=1e-4)
