"""Reading and writing overlapped with the network (issue 14, item 2): the same mask files as one slice after the
other, the same clear error for a bad file (and no output), and a cancel still stops the job."""
from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from covidseg_core.errors import Cancelled, InputError
from covidseg_core.events import CancelToken, Progress, drive
from covidseg_core.imaging.windowing import to_unit_range
from covidseg_core.infer.model import load_run_model
from covidseg_core.infer.predict import predict_job, predict_masks
from covidseg_core.io.background import BackgroundWriter
from covidseg_core.io.images import read_gray
from untrained_run import make_untrained_run

BATCH = 3       # small batches: many of them, so writing overlaps the network several times


@pytest.fixture
def run(tmp_path, one_torch_thread):
    torch.manual_seed(0)     # marks much of the lung: masks with content, not all empty
    return make_untrained_run(tmp_path / "run", size=64, lung_method="model", head_bias=2.0, epoch=1)


@pytest.fixture
def folder(tmp_path):
    """Demo chest slices between soft-tissue slices (no lung: skipped by the network), and a second slice size."""
    from covidseg_core.demo import make_demo_volume

    hu, _, _ = make_demo_volume(seed=0, n_slices=10, size=64)
    tissue = np.full((2, 64, 64), 40.0, np.float32)
    slices = np.concatenate([tissue, hu[2:8].astype(np.float32), tissue])
    pixels = (to_unit_range(slices, is_hu=True) * 255).round().astype(np.uint8)
    src = tmp_path / "slices"
    src.mkdir()
    for i, px in enumerate(pixels):
        Image.fromarray(px).save(src / f"s{i:02d}.png")
    for i, px in enumerate(pixels[3:6]):
        Image.fromarray(np.ascontiguousarray(px[8:56])).save(src / f"t{i:02d}.png")     # 64 wide, 48 high
    return src


def reference_pngs(run, src) -> dict[str, bytes]:
    """What predict wrote before the overlap: each size group's masks all at once, then one PNG after another."""
    lm = load_run_model(run, "cpu")
    files = sorted(src.iterdir())
    groups: dict[tuple, list] = {}
    for p in files:
        groups.setdefault(read_gray(p).shape, []).append(p)
    pngs = {}
    for group in groups.values():
        images01 = to_unit_range(np.stack([read_gray(p) for p in group]).astype(np.float32), is_hu=False, bits=8)
        for p, m in zip(group, drive(predict_masks(lm, images01, BATCH))):
            buf = io.BytesIO()
            Image.fromarray((m * 255).astype(np.uint8)).save(buf, format="PNG")
            pngs[p.name] = buf.getvalue()
    return pngs


def io_threads_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("covidseg-write")]


def test_overlapped_prediction_writes_the_same_files(run, folder, tmp_path):
    out = tmp_path / "out"
    summary = drive(predict_job(run, folder, out, device="cpu", batch_size=BATCH))
    expected = reference_pngs(run, folder)
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)       # no temp file left either
    assert {p.name: p.read_bytes() for p in out.iterdir()} == expected
    with_fg = sum(bool(np.asarray(Image.open(io.BytesIO(b))).any()) for b in expected.values())
    assert 0 < with_fg < len(expected)
    assert summary["n_images"] == len(expected) and summary["n_with_infection"] == with_fg
    assert not io_threads_alive()


def test_masks_handed_out_batch_by_batch_are_the_returned_masks(run, folder):
    lm = load_run_model(run, "cpu")
    files = sorted(folder.glob("s*.png"))
    images01 = to_unit_range(np.stack([read_gray(p) for p in files]).astype(np.float32), is_hu=False, bits=8)
    handed = []
    masks = drive(predict_masks(lm, images01, BATCH, on_masks=lambda idx, m: handed.append((idx.copy(), m.copy()))))
    assert np.array_equal(masks, drive(predict_masks(lm, images01, BATCH)))
    seen = np.concatenate([idx for idx, _ in handed])
    assert sorted(seen.tolist()) == list(range(len(files)))          # every slice once
    for idx, m in handed:
        assert np.array_equal(masks[idx], m)


def test_an_unreadable_image_among_good_ones_is_the_clear_error_and_nothing_is_written(run, folder, tmp_path):
    bad = folder / "s05.png"
    bad.write_bytes(b"not a png at all" * 10)
    with pytest.raises(InputError) as direct:
        read_gray(bad)
    out = tmp_path / "out"
    with pytest.raises(InputError) as raised:
        drive(predict_job(run, folder, out, device="cpu", batch_size=BATCH))
    assert raised.value.message == direct.value.message and str(bad) in raised.value.message
    assert raised.value.hint == direct.value.hint
    assert not out.exists() or not any(out.iterdir())
    assert not io_threads_alive()


def test_cancel_during_the_network_stops_the_job(run, folder, tmp_path):
    token, out = CancelToken(), tmp_path / "out"
    progress = []

    def on_event(ev):
        if isinstance(ev, Progress):
            progress.append(ev)
            token.cancel()
    with pytest.raises(Cancelled):
        drive(predict_job(run, folder, out, device="cpu", batch_size=BATCH, cancel=token), on_event=on_event)
    assert len(progress) == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]    # writes end whole or not at all
    assert len(list(out.iterdir())) < len(list(folder.iterdir()))
    assert not io_threads_alive()


def test_cancel_before_the_reading_stops_the_job_before_any_output(run, folder, tmp_path):
    token, out = CancelToken(), tmp_path / "out"
    token.cancel()
    with pytest.raises(Cancelled):
        drive(predict_job(run, folder, out, device="cpu", cancel=token))
    assert not out.exists() or not any(out.iterdir())


def test_a_failed_background_write_is_raised_on_the_callers_thread():
    def write(x):
        if x == 3:
            raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        with BackgroundWriter() as writer:
            for x in range(6):
                writer.submit(write, x)
    assert not io_threads_alive()
