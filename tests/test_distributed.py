"""`covidseg train` and `pseudo` under torchrun (covidseg_core/distributed.py, docs/distributed.md): the helpers, the
one-process run left as it was, real 2-process gloo jobs on the CPU (the demo study, 8 slices of 64 px)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from covidseg_core import distributed
from covidseg_core.cli import main
from covidseg_core.distributed import World
from covidseg_core.errors import InputError
from covidseg_core.events import CancelToken, drive
from covidseg_core.pipeline import train_job
from covidseg_core.project.api import Project
from covidseg_core.project.studies import add_study
from covidseg_core.project_training import project_train_job
from covidseg_core.runs import RunFolder
from covidseg_core.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@pytest.fixture
def two_ranks(monkeypatch):
    """This process as rank `r` of 2, for the pure helpers (no process group: they must not need one)."""
    def as_rank(r: int) -> None:
        monkeypatch.setattr(distributed, "_world", World(rank=r, size=2, local_rank=r, local_size=2))
    return as_rank


# --- the helpers ---------------------------------------------------------------------------------------------

def test_torchrun_env_is_read_and_its_absence_is_one_process():
    assert distributed.env_world({}) == World()
    assert not distributed.launched({})
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert distributed.env_world(env) == World(3, 4, 1, 2)
    assert distributed.launched(env)
    assert not distributed.launched({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})


def test_only_rank_0_logs_warnings_under_torchrun():
    import logging

    from covidseg_core.cli import log_level

    assert log_level(False, 0) == logging.WARNING and log_level(True, 0) == logging.DEBUG
    assert log_level(False, 1) == log_level(True, 3) == logging.ERROR


def test_the_classifier_probe_counts_each_rank_training_its_share_of_an_epoch(monkeypatch):
    """Rank 0 times a whole classifier epoch alone (local_only); under N ranks each trains 1/N of an epoch, so N x
    the epochs fit (on zenodo-dev the probe said 13.5 s and 2 ranks took 7.5 s an epoch: docs/distributed.md)."""
    import time

    from covidseg_core import pipeline
    from covidseg_core.budget import Plan
    from covidseg_core.events import CancelToken

    probed_in = []

    def costs(*args):
        probed_in.append(distributed.size())
        return {"epoch_s": 40.0, "pseudo_s": 0.0}
        yield

    monkeypatch.setattr(pipeline, "stage1_costs", costs)
    planned = {}
    for n in (1, 2):
        monkeypatch.setattr(distributed, "_world", World(rank=0, size=n))
        plan = Plan(budget_s=600.0, device="cpu", size=64, base=8)
        drive(pipeline.decide_stage1(plan, None, TrainConfig(), torch.device("cpu"), CancelToken(), time.monotonic,
                                     lambda: 480.0))
        planned[n] = plan.stage1
    assert probed_in == [1, 1]
    assert planned[1]["epoch_s"] == 40.0 and planned[2]["epoch_s"] == 20.0
    assert planned[2]["epochs"] == 2 * planned[1]["epochs"] == 6


def test_one_process_helpers_hand_back_their_input():
    assert not distributed.active() and distributed.is_writer()
    batch = np.arange(5)
    rng = np.random.default_rng(0)
    model = torch.nn.Linear(2, 2)
    assert distributed.shard(batch) is batch
    assert distributed.rank_rng(rng, 1, 2) is rng
    assert distributed.wrap(model, torch.device("cpu")) is model
    assert distributed.broadcast(batch) is batch
    assert distributed.gather_to_writer("mine") == ["mine"]
    assert distributed.my_share([4, 5]) == [4, 5]
    assert distributed.gather_rows(3, lambda idx: (idx * 2,))[0].tolist() == [0, 2, 4]
    with distributed.session("cpu") as device:       # no torchrun env: no process group, the device unchanged
        assert device == "cpu" and not distributed.active()


def test_shards_cover_every_global_batch_with_equal_padded_parts(two_ranks):
    batch = np.array([10, 11, 12, 13, 14])
    parts = []
    for r in (0, 1):
        two_ranks(r)
        parts.append(distributed.shard(batch))
    assert [p.tolist() for p in parts] == [[10, 12, 14], [11, 13, 10]]     # padded with the batch's start
    assert set(np.concatenate(parts)) == set(batch)
    assert distributed.my_share(list("abcde")) == ["b", "d"]


def test_each_rank_augments_from_its_own_stream(two_ranks):
    shared = np.random.default_rng(0)
    two_ranks(0)
    a = distributed.rank_rng(shared, 7, 1).random(4)
    two_ranks(1)
    b = distributed.rank_rng(shared, 7, 1).random(4)
    assert distributed.rank_rng(shared, 7, 1) is not shared and not np.allclose(a, b)


def test_other_ranks_never_write_the_run_folder(two_ranks, tmp_path):
    run = RunFolder(tmp_path / "run")
    two_ranks(1)
    run.create({"a": 1}, {}, "cpu")
    assert not (tmp_path / "run").exists()
    two_ranks(0)
    run.create({"a": 1}, {}, "cpu")                 # rank 0 makes the run; rank 1 then finds it, and adds nothing
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    two_ranks(1)
    run.write_json("plan.json", {"x": 1})
    run.append_epoch({"stage": "segmenter", "epoch": 1})
    run.drop_epochs_after("segmenter", 0)
    run.forget_epochs()
    run.save_checkpoint({"model": {}}, "last.pt")
    run.save_classifier({"model": {}})
    run.write_png(run.pseudo_dir / "a.png", np.zeros((4, 4), np.uint8))
    assert {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()} == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_nccl_without_cuda_is_a_clear_error():
    world = World(0, 2, 0, 2)
    with pytest.raises(InputError, match="NCCL needs CUDA"):
        distributed.pick_backend("cpu", world, {"COVIDSEG_DIST_BACKEND": "nccl"})
    with pytest.raises(InputError, match="needs CUDA"):
        distributed.pick_backend("cuda", world, {})
    assert distributed.pick_backend("auto", world, {}) == ("gloo", "cpu")


def test_more_processes_per_node_than_gpus_is_a_clear_error():
    with pytest.raises(InputError, match="4 processes per node.*2 CUDA GPU"):
        distributed.pick_backend("cuda", World(0, 4, 0, 4), {}, cuda_available=True, gpu_count=2)
    with pytest.raises(InputError, match="NCCL runs on CUDA GPUs only"):
        distributed.pick_backend("cpu", World(0, 2, 0, 2), {"COVIDSEG_DIST_BACKEND": "nccl"},
                                 cuda_available=True, gpu_count=2)
    assert distributed.pick_backend("auto", World(1, 4, 1, 2), {}, cuda_available=True, gpu_count=2) == \
        ("nccl", "cuda:1")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_the_command_under_torchrun_asking_for_nccl_without_cuda_exits_2(monkeypatch, tmp_path, capsys):
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "COVIDSEG_DIST_BACKEND": "nccl"}.items():
        monkeypatch.setenv(k, v)
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
    assert "NCCL" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# --- one process: today's run --------------------------------------------------------------------------------

def tiny() -> TrainConfig:
    return TrainConfig(size=None, cls_epochs=1, seg_epochs=2, base=8, batch_size=4, lr=5e-3)


@pytest.fixture(scope="module")
def demo8(tmp_path_factory) -> Path:
    from covidseg_core.demo import write_demo

    out = tmp_path_factory.mktemp("demo8") / "study"
    write_demo(out, n_slices=8, size=64)
    return out


@pytest.mark.slow
def test_torchrun_with_one_process_trains_exactly_the_plain_run(demo8, tmp_path, monkeypatch):
    """torchrun --nproc-per-node 1 (WORLD_SIZE=1) is the plain run: same weights, bit for bit. (That the plain run
    is the one before distributed.py was checked by hand against f4658ca: same best.pt, last.pt, classifier.pt
    and pseudo/cams/lungs PNGs.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # two threads on a busy 2-core machine took 4x longer than one
    try:
        drive(train_job(demo8, tmp_path / "plain", tiny(), device="cpu"))
        for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
            monkeypatch.setenv(k, v)
        with distributed.session("cpu") as device:
            assert not distributed.active()
            drive(train_job(demo8, tmp_path / "one", tiny(), device=device))
    finally:
        torch.set_num_threads(threads)
    a = RunFolder(tmp_path / "plain").load_checkpoint("best.pt")["model"]
    b = RunFolder(tmp_path / "one").load_checkpoint("best.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- real 2-process jobs (gloo, CPU) -------------------------------------------------------------------------

needs_gloo = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")
TRAIN = ["train", "--device", "cpu", "--size", "64", "--cls-epochs", "1", "--seg-epochs", "2", "--seed", "0"]
# a budget too small for more than a few epochs: rank 0 measures the speed probes alone and broadcasts the plan
BUDGETED = ["train", "--device", "cpu", "--size", "64", "--budget", "0.2", "--seed", "0"]


def _command(cmd: list[str], timeout: float = 150) -> subprocess.CompletedProcess:
    # one thread per process, as torchrun sets it: a one-process run in this test then runs like each rank
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def _torchrun(entry: list[str], args: list[str], timeout: float = 150) -> subprocess.CompletedProcess:
    return _command(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *entry, *args], timeout)


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def two_process_run(demo8, tmp_path_factory):
    run = tmp_path_factory.mktemp("ddp") / "run"
    done = _torchrun(["-m", "covidseg_core"], [*BUDGETED, "--data", str(demo8), "--out", str(run)])
    return run, done


@needs_gloo
@pytest.mark.slow
def test_two_processes_write_one_run_like_a_one_process_run(two_process_run, demo8, tmp_path):
    run, done = two_process_run
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)          # rank 0 alone printed: one JSON object on stdout
    assert result["complete"] and result["stage1"]["counts"]["pseudo_masks"] == 8
    plan = RunFolder(run).read_json("plan.json")
    assert plan["stage1"]["how"] == plan["stage2"]["how"] == "budget"
    n_cls, n_seg = plan["stage1"]["epochs"], plan["stage2"]["epochs"]
    rows = RunFolder(run).read_epochs()           # every epoch once, as the plan both ranks trained to says
    assert [(r["stage"], r["epoch"]) for r in rows] == \
        [("classifier", e) for e in range(1, n_cls + 1)] + [("segmenter", e) for e in range(1, n_seg + 1)]
    assert done.stderr.count(f"[segmenter] epoch {n_seg}/{n_seg}") == 1          # progress from rank 0 only
    # the same layout as a one-process run (fixed epochs: it is the layout compared, and a budget costs more here)
    one = _command(["-m", "covidseg_core", "--quiet", *TRAIN, "--data", str(demo8), "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-3000:]
    assert _files(run) == _files(tmp_path / "one")


@needs_gloo
@pytest.mark.slow
def test_a_two_process_checkpoint_opens_in_predict_on_the_cpu(two_process_run, demo8, tmp_path):
    run, done = two_process_run
    assert done.returncode == 0, done.stderr[-3000:]
    state = RunFolder(run).load_checkpoint("best.pt")["model"]
    assert state and not any(k.startswith("module.") for k in state)      # DDP's prefix stays out
    assert main(["--quiet", "predict", "--run", str(run), "--input", str(demo8 / "images"),
                 "--out", str(tmp_path / "pred"), "--device", "cpu"]) == 0
    assert len(list((tmp_path / "pred").glob("*.png"))) == 8


@needs_gloo
@pytest.mark.slow
def test_the_app_predicts_a_study_with_a_two_process_run(two_process_run, demo8):
    """The app's predict job (what "Use a trained model..." and a reopened project run) on a torchrun-trained run:
    the study's mask, saved into the run, and its burden measured."""
    from app import tasks
    from covidseg_core.io.loader import open_study

    run, done = two_process_run
    assert done.returncode == 0, done.stderr[-3000:]
    study = open_study(demo8 / "volume" / "ct.nii.gz")
    result = drive(tasks.predict_job(run, None, "demo8", study, "cpu", None)(CancelToken()))
    assert result.prediction.shape == study.shape and set(np.unique(result.prediction)) <= {0, 1}
    assert result.run == str(run) and result.quantification is not None


# Dice mean (the run's own report on the demo's ground truth, all slices) on a 16-slice 64-pixel demo, `--fast
# --size 64` (random start: the prior is for 128 pixels), seeds 0-5 (benchmarks/torchrun_scaling.py --same-steps,
# docs/distributed.md "Dice"): one process at 12 epochs per stage 0.028-0.262 (mean 0.157); two processes at 24
# epochs (the same optimiser steps: each rank's epoch is half the steps) 0.157-0.258 (mean 0.212), seed 0 0.207.
# The lower bound is the one-process mean less a margin for other CPUs' arithmetic (the one-process minimum is a
# run that barely learned, no bound at all).
ONE_PROCESS_DICE = (0.157, 0.262)   # mean, max
DICE_MARGIN = 0.05


@needs_gloo
@pytest.mark.slow
def test_a_two_process_run_reaches_the_dice_of_one_process_runs(tmp_path):
    from covidseg_core.demo import write_demo

    write_demo(tmp_path / "study", n_slices=16, size=64)
    done = _torchrun(["-m", "covidseg_core"], ["--quiet", "train", "--device", "cpu", "--fast", "--size", "64",
                                               "--cls-epochs", "24", "--seg-epochs", "24", "--seed", "0",
                                               "--data", str(tmp_path / "study"), "--out", str(tmp_path / "run")],
                     timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    dice = json.loads(done.stdout)["ground_truth_report"]["segmenter_all"]["dice_mean"]
    assert ONE_PROCESS_DICE[0] - DICE_MARGIN <= dice <= ONE_PROCESS_DICE[1] + DICE_MARGIN, dice


@needs_gloo
@pytest.mark.slow
def test_a_failing_rank_ends_the_job_and_the_same_command_resumes(demo8, tmp_path):
    args = [*TRAIN, "--data", str(demo8), "--out", str(tmp_path / "run")]
    failed = _torchrun([str(ROOT / "tests" / "helpers" / "failing_rank.py")], args)   # a hang: _command's timeout
    assert failed.returncode != 0
    assert "covidseg (rank 1): error: forced failure of rank 1 (test)" in failed.stderr
    assert RunFolder(tmp_path / "run").load_checkpoint("last.pt")["epoch"] == 1
    resumed = _torchrun(["-m", "covidseg_core"], args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the segmenter from epoch 1 of 2" in resumed.stderr
    rows = RunFolder(tmp_path / "run").read_epochs("segmenter")
    assert [r["epoch"] for r in rows] == [1, 2]


# --- train --project: every rank trains on the project's slices, rank 0 alone writes --------------------------

@needs_gloo
@pytest.mark.slow
def test_two_processes_run_stage_1_alone_to_rank_0s_plan(demo8, tmp_path):
    """`covidseg pseudo` under torchrun: rank 0 times the probe and plans, both ranks train to that plan, rank 0
    alone prints and writes, and the run has a one-process run's files."""
    args = ["pseudo", "--device", "cpu", "--size", "64", "--budget", "0.2", "--seed", "0", "--data", str(demo8)]
    done = _torchrun(["-m", "covidseg_core"], [*args, "--out", str(tmp_path / "run")])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)          # rank 0 alone printed: one JSON object on stdout
    assert result["status"] == "complete" and result["counts"]["pseudo_masks"] == 8
    run = RunFolder(tmp_path / "run")
    plan = run.read_json("plan.json")
    assert plan["stage1"]["how"] == "budget" and result["classifier"]["epochs"] == plan["stage1"]["epochs"]
    assert [r["epoch"] for r in run.read_epochs()] == list(range(1, plan["stage1"]["epochs"] + 1))
    one = _command(["-m", "covidseg_core", "--quiet", *args, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-3000:]
    assert _files(tmp_path / "run") == _files(tmp_path / "one")


def _demo_project(demo8: Path, folder: Path) -> Path:
    """A project of the demo study (its labels taken in) with one correction, which becomes a pixel label."""
    mask = np.zeros((64, 64), np.uint8)
    mask[20:30, 20:30] = 1
    with Project.create(folder) as project:
        add_study(project, demo8 / "volume" / "ct.nii.gz")
        project.save_correction("s1", "3", mask)
    return folder


@needs_gloo
@pytest.mark.slow
def test_two_processes_train_a_project_and_record_one_run(demo8, tmp_path):
    project, run = _demo_project(demo8, tmp_path / "project"), tmp_path / "run"
    done = _torchrun(["-m", "covidseg_core"], [*TRAIN, "--project", str(project), "--out", str(run)])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)          # rank 0 alone printed: one JSON object on stdout
    assert result["complete"] and result["segmenter"]["n_pixel_labelled"] == 1
    assert Path(result["studies"]["s1"]["prediction"]).is_file()
    with Project.open(project, read_only=True) as p:
        runs = p.runs
    assert len(runs) == 1 and runs[0]["summary"]["status"] == "done" and runs[0]["summary"]["pixel_labels"] == 1
    assert len(list((project / "pixel_labels").rglob("*.png"))) == 1
    entries = [json.loads(m.read_text())["inputs"] for m in Path(os.environ["COVIDSEG_CACHE_DIR"]).glob("*/entry.json")]
    study = str((demo8 / "volume" / "ct.nii.gz").resolve())
    assert any(e.get("study") and e["path"] == study for e in entries)    # rank 1 mapped it, rank 0 decoded it
    one = _command(["-m", "covidseg_core", "--quiet", *TRAIN, "--project", str(_demo_project(demo8, tmp_path / "p1")),
                    "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-3000:]
    assert _files(run) == _files(tmp_path / "one")


def test_ranks_other_than_0_map_rank_0s_studies_from_the_slice_cache(demo8, tmp_path, two_ranks, monkeypatch):
    """train --project under torchrun: rank 0 decodes each study once, the others map its slices (issue 17)."""
    from covidseg_core.data import data_fingerprint
    from covidseg_core.io import loader
    from covidseg_core.project.studies import project_slices
    from covidseg_core.slice_cache import MappedStudy
    from covidseg_core.study import Study

    project, cache = _demo_project(demo8, tmp_path / "project"), tmp_path / "cache"
    sent = []
    two_ranks(0)
    monkeypatch.setattr(distributed, "broadcast", lambda obj: sent.append(obj) or obj)
    with Project.open(project, read_only=True) as p:
        rank0 = project_slices(p, cache_dir=cache)
        assert isinstance(rank0.parts[0].study, Study) and len(sent) == 1 and sent[0][0] == "ok"
        assert Path(sent[0][1]).parent == cache and (Path(sent[0][1]) / "images.npy").is_file()

        two_ranks(1)           # rank 1 receives rank 0's message and must not decode the study
        monkeypatch.setattr(distributed, "broadcast", lambda obj: sent[0])
        monkeypatch.setattr(loader, "open_study", lambda *a, **k: pytest.fail("rank 1 decoded the study"))
        rank1 = project_slices(p, cache_dir=cache)
    assert isinstance(rank1.parts[0].study, MappedStudy)
    np.testing.assert_array_equal(rank1.slices.images, rank0.slices.images)
    assert data_fingerprint(rank1.slices) == data_fingerprint(rank0.slices)     # what _pixel_labels compares


def test_a_study_rank_0_cannot_read_is_left_out_on_every_rank(demo8, tmp_path, two_ranks, monkeypatch):
    from covidseg_core.project.studies import project_slices

    project, cache = _demo_project(demo8, tmp_path / "project"), tmp_path / "cache"
    gone = tmp_path / "gone.nii.gz"
    gone.write_bytes((demo8 / "volume" / "ct.nii.gz").read_bytes())
    with Project.open(project) as p:
        p.add_source(gone, "nifti")
    gone.unlink()                   # moved or deleted since it was added
    sent = []
    two_ranks(0)
    monkeypatch.setattr(distributed, "broadcast", lambda obj: sent.append(obj) or obj)
    with Project.open(project, read_only=True) as p:
        rank0 = project_slices(p, cache_dir=cache)
        two_ranks(1)
        replies = iter(sent)
        monkeypatch.setattr(distributed, "broadcast", lambda obj: next(replies))
        rank1 = project_slices(p, cache_dir=cache)
    assert [m[0] for m in sent] == ["ok", "error"]
    assert len(rank0.skipped) == len(rank1.skipped) == 1 and "missing" in rank1.skipped[0]
    assert len(rank1.slices) == len(rank0.slices) == 8


@needs_gloo
@pytest.mark.slow
def test_a_project_open_elsewhere_ends_every_rank(demo8, tmp_path):
    project = _demo_project(demo8, tmp_path / "project")
    with Project.open(project):            # as the app holding it: rank 0 cannot lock it, rank 1 waits for rank 0
        failed = _torchrun(["-m", "covidseg_core"], [*TRAIN, "--project", str(project), "--out", str(tmp_path / "run")])
    assert failed.returncode != 0
    assert "covidseg: error: The project in" in failed.stderr and "is already open" in failed.stderr
    assert not (tmp_path / "run").exists()          # ended (a hang would hit _command's timeout), nothing written


def test_a_rank_that_read_other_slices_stops_the_job_before_anything_is_recorded(demo8, tmp_path, two_ranks,
                                                                                  monkeypatch):
    project = _demo_project(demo8, tmp_path / "project")
    two_ranks(0)               # rank 0 of 2, and rank 1's fingerprint of the project's slices is another
    monkeypatch.setattr(distributed, "gather_to_writer", lambda fingerprint: [fingerprint, "other"])
    monkeypatch.setattr(distributed, "broadcast", lambda obj: obj)
    with Project.open(project) as p:
        with pytest.raises(InputError, match=r"rank\(s\) 1 read other slices"):
            drive(project_train_job(p, tmp_path / "run", tiny(), device="cpu"))
        assert p.runs == []
    assert not (tmp_path / "run").exists()
