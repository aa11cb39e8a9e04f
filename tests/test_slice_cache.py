"""The preprocessed slice cache (covidseg_core/slice_cache.py): the same SliceSet as a plain load, read back
without decoding, a new entry for changed data, a damaged entry rebuilt, never a failure, never a write in the data;
and `covidseg train` reading its data through it."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from covidseg_core import slice_cache
from covidseg_core.data import load_slice_set
from covidseg_core.errors import InputError
from covidseg_core.events import Done, drive
from covidseg_core.slice_cache import default_cache_dir, load_slice_set_cached


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """An image folder (images/ + labels.csv + masks/) of 8 slices of 32 px, and volume/ (NIfTI + labels.csv)."""
    from covidseg_core.demo import write_demo

    out = tmp_path_factory.mktemp("cache") / "study"
    write_demo(out, n_slices=8, size=32)
    return out


@pytest.fixture
def data(demo, tmp_path) -> Path:
    """A private copy of the demo, for the tests that change its files."""
    import shutil

    return Path(shutil.copytree(demo, tmp_path / "data"))


def files_of(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in folder.rglob("*") if p.is_file()}


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))


def assert_same(a, b) -> None:
    assert a.images.dtype == b.images.dtype == np.float32
    assert np.array_equal(a.images, b.images)
    assert (a.ids, a.labels, a.groups) == (b.ids, b.labels, b.groups)
    assert (a.gt_masks is None) == (b.gt_masks is None)
    if a.gt_masks is not None:
        assert a.gt_masks.dtype == b.gt_masks.dtype and np.array_equal(a.gt_masks, b.gt_masks)
        assert np.array_equal(a.has_gt, b.has_gt)


def no_decoding(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the study was decoded although its cache entry is there")
    monkeypatch.setattr(slice_cache, "load_slice_set", refuse)


@pytest.mark.parametrize("layout", ["images", "volume"])
def test_the_cached_slice_set_is_the_plain_load_and_a_second_load_decodes_nothing(demo, tmp_path, monkeypatch,
                                                                                   caplog, layout):
    path = demo if layout == "images" else demo / "volume" / "ct.nii.gz"
    plain = load_slice_set(path)
    with caplog.at_level(logging.WARNING, logger="covidseg_core.slice_cache"):
        first = load_slice_set_cached(path, cache_dir=tmp_path / "cache")
    assert caplog.text == ""                           # a first build is no news
    assert_same(first, plain)
    assert (plain.gt_masks is not None) == (layout == "images")
    [entry] = entries(tmp_path / "cache")
    assert {"images.npy", "entry.json"} <= {p.name for p in entry.iterdir()}
    no_decoding(monkeypatch)
    second = load_slice_set_cached(path, cache_dir=tmp_path / "cache")
    assert_same(second, plain)
    assert second.study is None                       # the Study object is not cached (train does not use it)
    assert entries(tmp_path / "cache") == [entry]


def test_cached_arrays_are_read_only_maps(demo, tmp_path):
    slices = load_slice_set_cached(demo, cache_dir=tmp_path / "cache")
    for arr in (slices.images, slices.gt_masks, slices.has_gt):
        assert not arr.flags.writeable and type(arr) is np.ndarray
        assert isinstance(arr.base, np.memmap)
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 0
    sub = slices.subset([3, 1])                        # what training indexes is an ordinary array
    assert sub.images.flags.writeable and np.array_equal(sub.images, slices.images[[3, 1]])


def test_a_touched_image_or_changed_labels_give_a_fresh_entry(data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    load_slice_set_cached(data, cache_dir=cache)
    [old] = entries(cache)
    img = sorted((data / "images").iterdir())[2]
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))       # same bytes, touched
    calls = []
    real = slice_cache.load_slice_set
    monkeypatch.setattr(slice_cache, "load_slice_set", lambda *a, **k: calls.append(a) or real(*a, **k))
    load_slice_set_cached(data, cache_dir=cache)
    assert len(calls) == 1
    [touched] = entries(cache)                         # the older entry of the same data is removed
    assert touched != old

    rows = (data / "labels.csv").read_text().splitlines()
    flipped = rows[1].replace("infected", "X").replace("clean", "infected").replace("X", "clean")
    (data / "labels.csv").write_text("\n".join([rows[0], flipped, *rows[2:]]) + "\n")
    relabelled = load_slice_set_cached(data, cache_dir=cache)
    assert len(calls) == 2 and entries(cache) != [touched]
    assert_same(relabelled, load_slice_set(data))


def test_an_explicit_labels_csv_is_part_of_the_key(demo, tmp_path):
    volume = demo / "volume" / "ct.nii.gz"
    labels = tmp_path / "labels.csv"
    labels.write_text((demo / "volume" / "labels.csv").read_text().replace("clean", "infected", 1))
    a = load_slice_set_cached(volume, cache_dir=tmp_path / "cache")
    b = load_slice_set_cached(volume, labels, cache_dir=tmp_path / "cache")
    assert a.labels != b.labels and b.labels == load_slice_set(volume, labels).labels
    assert len(entries(tmp_path / "cache")) == 2       # another labels file is another entry, not a stale one


@pytest.mark.parametrize("damage", ["truncate images", "corrupt json", "drop masks", "wrong shape"])
def test_a_damaged_entry_is_rebuilt_with_a_log_line(demo, tmp_path, caplog, damage):
    cache = tmp_path / "cache"
    load_slice_set_cached(demo, cache_dir=cache)
    [entry] = entries(cache)
    if damage == "truncate images":
        with open(entry / "images.npy", "r+b") as fh:
            fh.truncate(entry.joinpath("images.npy").stat().st_size // 2)
    elif damage == "corrupt json":
        (entry / "entry.json").write_text('{"format": 1, "ids": [')
    elif damage == "drop masks":
        (entry / "gt_masks.npy").unlink()
    else:
        np.save(entry / "images.npy", np.zeros((8, 16, 32), np.float32))
    with caplog.at_level(logging.WARNING, logger="covidseg_core.slice_cache"):
        rebuilt = load_slice_set_cached(demo, cache_dir=cache)
    assert "damaged" in caplog.text and "rebuilding" in caplog.text
    assert_same(rebuilt, load_slice_set(demo))
    assert entries(cache) == [entry]
    slice_cache.open_entry(entry)                      # whole again


def test_a_cache_that_cannot_be_written_is_a_plain_load_with_a_warning(demo, tmp_path, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="covidseg_core.slice_cache"):
        slices = load_slice_set_cached(demo, cache_dir=blocked / "cache")
    assert "cannot be written" in caplog.text and "damaged" not in caplog.text
    assert_same(slices, load_slice_set(demo))
    assert slices.images.flags.writeable               # the plain load's own arrays


def test_nothing_is_written_into_the_data(data, tmp_path, caplog):
    before = files_of(data)
    load_slice_set_cached(data, cache_dir=tmp_path / "cache")
    load_slice_set_cached(data, cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="covidseg_core.slice_cache"):
        inside = load_slice_set_cached(data, cache_dir=data / "cache")      # a cache inside the data: refused
    assert "inside the data" in caplog.text
    assert_same(inside, load_slice_set(data))
    assert files_of(data) == before


def test_missing_data_is_the_plain_loads_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_slice_set_cached(tmp_path / "missing", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_the_default_cache_folder():
    home = Path.home()
    assert default_cache_dir({}) == home / ".cache" / "covidseg" / "slices"
    assert default_cache_dir({"XDG_CACHE_HOME": "/x/cache"}) == Path("/x/cache/covidseg/slices")
    assert default_cache_dir({"XDG_CACHE_HOME": "/x", "COVIDSEG_CACHE_DIR": "/y/c"}) == Path("/y/c")


# --- `covidseg train --data` ---------------------------------------------------------------------------------

def fake_train_job(seen: dict):
    def job(data, out, cfg, device="auto", labels_csv=None, slices=None, **kw):
        seen["loader"] = slices
        seen["slices"] = slices(data, labels_csv) if callable(slices) else None
        yield Done({"complete": True})
    return job


def test_train_reads_its_data_through_the_cache_unless_told_not_to(demo, tmp_path, monkeypatch, capsys):
    from covidseg_core import pipeline
    from covidseg_core.cli import main

    seen: dict = {}
    monkeypatch.setattr(pipeline, "train_job", fake_train_job(seen))
    assert main(["--quiet", "train", "--data", str(demo), "--out", str(tmp_path / "run"),
                 "--cache-dir", str(tmp_path / "c1")]) == 0
    assert len(entries(tmp_path / "c1")) == 1 and not seen["slices"].images.flags.writeable
    monkeypatch.setenv("COVIDSEG_CACHE_DIR", str(tmp_path / "c2"))
    assert main(["--quiet", "train", "--data", str(demo), "--out", str(tmp_path / "run")]) == 0
    assert len(entries(tmp_path / "c2")) == 1
    assert main(["--quiet", "train", "--data", str(demo), "--out", str(tmp_path / "run"), "--no-cache"]) == 0
    assert seen["loader"] is None                      # train_job then reads the data itself
    capsys.readouterr()


def test_pseudo_reads_its_data_through_the_cache_unless_told_not_to(demo, tmp_path, monkeypatch, capsys):
    from covidseg_core import pseudo_job
    from covidseg_core.cli import main

    seen = []

    def job(slices, out, cfg, device="auto", cue=None):
        seen.append(slices)
        yield Done({"complete": True})

    monkeypatch.setattr(pseudo_job, "pseudo_job", job)
    assert main(["--quiet", "pseudo", "--data", str(demo), "--out", str(tmp_path / "run"),
                 "--cache-dir", str(tmp_path / "c1")]) == 0
    assert len(entries(tmp_path / "c1")) == 1 and not seen[-1].images.flags.writeable     # mapped from the entry
    assert main(["--quiet", "pseudo", "--data", str(demo), "--out", str(tmp_path / "run"), "--no-cache"]) == 0
    assert seen[-1].images.flags.writeable and len(seen[-1]) == len(seen[0])              # a plain read
    capsys.readouterr()


def test_train_job_checks_its_options_before_calling_the_loader(tmp_path):
    from covidseg_core.pipeline import train_job
    from covidseg_core.train_config import TrainConfig

    called = []
    with pytest.raises(InputError, match="--cls-epochs"):
        drive(train_job(tmp_path, tmp_path / "run", TrainConfig(cls_epochs=0), device="cpu",
                        slices=lambda *a: called.append(a)))
    assert called == []


def test_an_entry_records_what_its_key_is_made_of(demo, tmp_path):
    load_slice_set_cached(demo, cache_dir=tmp_path / "cache")
    [entry] = entries(tmp_path / "cache")
    meta = json.loads((entry / "entry.json").read_text())
    assert meta["inputs"]["path"] == str(demo.resolve())
    rows = {f[0]: f[1:] for f in meta["inputs"]["files"]}
    st = (demo / "labels.csv").stat()
    assert rows["labels.csv"] == [st.st_size, st.st_mtime_ns] and "images/demo_000.png" in rows
    assert entry.name == slice_cache.entry_key(slice_cache.source_inputs(demo))


@pytest.mark.filterwarnings("error:The given NumPy array is not writable")
def test_training_on_cached_slices_never_writes_into_the_read_only_maps(demo, tmp_path, one_torch_thread):
    """The whole train job on memory-mapped slices at their own size (where the maps would reach torch unresized):
    a write into a map would crash, and torch sharing one would warn (an error here)."""
    from functools import partial

    from covidseg_core.imaging.resize import to_working_size
    from covidseg_core.pipeline import train_job
    from covidseg_core.train_config import TrainConfig

    loader = partial(load_slice_set_cached, cache_dir=tmp_path / "cache")
    cfg = TrainConfig(size=None, cls_epochs=1, seg_epochs=1, base=8, batch_size=4, lr=5e-3)
    metrics = drive(train_job(demo, tmp_path / "run", cfg, device="cpu", slices=loader))
    assert metrics["complete"]
    cached = loader(demo)
    assert_same(cached, load_slice_set(demo))           # nothing written into the entry either
    for size in (None, 16):                            # copied out of the map in chunks: the same numbers
        work = to_working_size(cached.images, size)
        assert work.flags.writeable and np.array_equal(work, to_working_size(load_slice_set(demo).images, size))


def test_a_read_only_stack_goes_to_torch_in_chunks_with_the_same_numbers(monkeypatch):
    from covidseg_core.imaging import resize

    monkeypatch.setattr(resize, "READ_ONLY_CHUNK", 3)
    stack = np.random.default_rng(0).random((7, 20, 24), dtype=np.float32)
    frozen = stack.copy()
    frozen.flags.writeable = False
    for shape in ((20, 24), (10, 12), (40, 48)):
        whole, chunked = resize.stack_to_torch(stack, shape), resize.stack_to_torch(frozen, shape)
        assert chunked.shape == (7, 1, *shape) and bool((whole == chunked).all())
    assert resize.stack_to_torch(frozen[:0], (5, 6)).shape == (0, 1, 5, 6)


# --- under torchrun: rank 0 decodes, the others map its entry --------------------------------------------------

def _two_ranks(data: str, cache: str, out: Path) -> list[dict]:
    import subprocess
    import sys

    out.mkdir(parents=True)
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env.update(PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(root / "tests" / "helpers" / "cache_ranks.py"), data, cache, str(out)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_under_torchrun_rank_0_alone_decodes_and_the_others_map_its_entry(demo, tmp_path):
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    first = _two_ranks(str(demo), str(tmp_path / "cache"), tmp_path / "first")
    assert [(r["rank"], r["decoded"], r["mapped"]) for r in first] == [(0, 1, True), (1, 0, True)]
    assert first[0]["ids"] == first[1]["ids"] and first[0]["sum"] == first[1]["sum"]
    again = _two_ranks(str(demo), str(tmp_path / "cache"), tmp_path / "again")          # a later run: nobody decodes
    assert [(r["rank"], r["decoded"]) for r in again] == [(0, 0), (1, 0)] and again[1]["sum"] == first[0]["sum"]
    assert len(entries(tmp_path / "cache")) == 1
