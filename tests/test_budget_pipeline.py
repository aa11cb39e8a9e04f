"""A budgeted `train` job end to end on a small synthetic study: the plan is measured, recorded in RUN/plan.json,
followed by both stages, reused (not re-measured) by a resumed run, and reported in metrics.json; the device
decides the defaults; `--budget` is parsed strictly. The job's clock is a FAKE one (it ticks once per reading),
so what the planner decides is deterministic; no test asserts a wall-clock time."""
from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

from covidseg_core import cli
from covidseg_core.budget import CPU_BASE, CPU_SIZE, DEFAULT_CPU_BUDGET_MIN, Plan
from covidseg_core.demo import write_demo
from covidseg_core.errors import Cancelled
from covidseg_core.events import CancelToken, EpochReport, Message, Progress, drive
from covidseg_core.infer.device import resolve_device
from covidseg_core.pipeline import new_plan, train_job
from covidseg_core.runs import RunFolder
from covidseg_core.train_config import TrainConfig


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test of this module runs torch on one thread (see conftest.one_torch_thread)."""


class TickingClock:
    """Fake seconds: every reading moves the clock on by `tick`, so a probe 'measures' a fixed cost."""

    def __init__(self, tick: float = 1.0):
        self.t, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.t += self.tick
        return self.t


def budgeted(**overrides) -> TrainConfig:
    return TrainConfig(**{**dict(budget_minutes=1.0, base=8, batch_size=4, lr=5e-3), **overrides})


def _plan(run) -> dict:
    return json.loads((run / "plan.json").read_text())


def _weights(run) -> dict:
    return RunFolder(run).load_checkpoint("best.pt")["model"]


@pytest.fixture(scope="module")
def budget_run(small_demo, tmp_path_factory):
    run = tmp_path_factory.mktemp("budgeted") / "run"
    events = []
    result = drive(train_job(small_demo, run, budgeted(), device="cpu", clock=TickingClock()), events.append)
    return run, events, result


def test_a_budgeted_run_records_its_plan_and_follows_it(budget_run):
    run, events, result = budget_run
    plan = _plan(run)
    assert plan["budget_s"] == 60.0 and plan["device"] == "cpu"
    assert plan["size"] == 64 and plan["base"] == 8         # the demo's own 64 pixels; the explicit width wins
    assert plan["stage1"]["how"] == "budget" and plan["stage2"]["how"] == "budget"
    assert plan["stage1"]["epoch_s"] > 0 and plan["stage2"]["step_s"] > 0
    epochs = RunFolder(run).read_epochs()
    assert len([e for e in epochs if e["stage"] == "classifier"]) == plan["stage1"]["epochs"] >= 1
    assert len([e for e in epochs if e["stage"] == "segmenter"]) == plan["stage2"]["epochs"] >= 1
    assert result["segmenter"]["steps_per_epoch"] == plan["stage2"]["steps_per_epoch"]
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("budget_s", "size", "base", "stage1", "stage2"):
        assert metrics["plan"][key] == plan[key]
    assert set(metrics["plan"]["actual_s"]) == {"stage1", "stage2", "total"}
    # the speed was measured before each stage, and every training progress event carries the whole job's ETA
    assert [e.done for e in events if isinstance(e, Progress) and e.stage == "plan"][-1] == 2
    training = [e for e in events if isinstance(e, Progress) and e.stage in ("classifier", "segmenter")]
    assert training and all(e.eta_s is not None and e.eta_s >= 0 for e in training)


def test_a_cancelled_budgeted_run_resumes_with_the_same_plan(small_demo, budget_run, tmp_path):
    reference, _, _ = budget_run
    run = tmp_path / "run"
    cancel = CancelToken()
    with pytest.raises(Cancelled):
        for event in train_job(small_demo, run, budgeted(), device="cpu", cancel=cancel, clock=TickingClock()):
            if isinstance(event, EpochReport) and event.stage == "segmenter" and event.epoch == 1:
                cancel.cancel()
    plan_before = _plan(run)
    assert plan_before["stage2"] is not None
    events = []
    # a clock ten times slower: re-measuring would plan differently; the recorded plan must be used instead
    drive(train_job(small_demo, run, budgeted(), device="cpu", clock=TickingClock(tick=10.0)), events.append)
    assert not [e for e in events if isinstance(e, Progress) and e.stage == "plan"]
    after = _plan(run)
    assert {k: after[k] for k in ("budget_s", "size", "base", "stage2")} == \
        {k: plan_before[k] for k in ("budget_s", "size", "base", "stage2")}
    assert after == _plan(reference)     # the same decisions as the uninterrupted run
    assert [r["epoch"] for r in RunFolder(run).read_epochs("segmenter")] == \
        list(range(1, plan_before["stage2"]["epochs"] + 1))
    ref, got = _weights(reference), _weights(run)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_explicit_epochs_win_and_the_budget_sizes_the_other_stage(small_demo, tmp_path):
    run = tmp_path / "run"
    drive(train_job(small_demo, run, budgeted(cls_epochs=2), device="cpu", clock=TickingClock(tick=2.0)))
    plan = _plan(run)
    assert plan["stage1"] == {"how": "explicit", "epochs": 2, "ended_at_s": plan["stage1"]["ended_at_s"]}
    assert plan["stage2"]["how"] == "budget"


def test_a_budget_too_small_trains_one_epoch_with_a_warning(small_demo, tmp_path):
    run = tmp_path / "run"
    events = []
    drive(train_job(small_demo, run, budgeted(budget_minutes=0.05), device="cpu", clock=TickingClock()),
          events.append)
    warnings = [e.text for e in events if isinstance(e, Message) and e.level == "warning"]
    assert any("too small for one classifier epoch" in w for w in warnings)
    assert any("too small to train the segmenter" in w for w in warnings)
    plan = _plan(run)
    assert plan["stage1"]["epochs"] == 1 and plan["warnings"]
    assert plan["stage2"]["epochs"] * plan["stage2"]["steps_per_epoch"] >= 1
    assert (run / "checkpoints" / "best.pt").is_file()


@pytest.mark.parametrize("cuda", [True, False])
def test_defaults_depend_on_the_device(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    plan = new_plan(TrainConfig(), resolve_device("auto"), native_side=512)
    if cuda:     # the full size and schedule
        assert plan == Plan(budget_s=None, device="cuda", size=256, base=None)
    else:        # a budget, at a size and width a CPU can afford
        assert plan == Plan(budget_s=DEFAULT_CPU_BUDGET_MIN * 60, device="cpu", size=CPU_SIZE, base=CPU_BASE)
    # --budget 0 / --no-budget: the fixed schedule at the full size on any device
    assert new_plan(TrainConfig(budget_minutes=0), resolve_device("auto"), 512).budget_s is None
    assert new_plan(TrainConfig(budget_minutes=0), resolve_device("auto"), 512).size == 256
    # both stages' epochs given: the budget sizes nothing, so nothing is made cheaper either
    assert new_plan(TrainConfig(cls_epochs=3, seg_epochs=4), resolve_device("auto"), 512) == \
        Plan(budget_s=None, device="cuda" if cuda else "cpu", size=256, base=None)


@pytest.mark.parametrize("value,fragment", [("-1", "must be a positive number of minutes"),
                                            ("abc", "is not a number of minutes"),
                                            ("nan", "must be a positive number of minutes")])
def test_bad_budget_options_exit_2_with_a_clear_message(value, fragment, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--budget", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--budget" in err and fragment in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--budget", "3", "--no-budget"])
    assert exit_.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_budget_zero_and_no_budget_are_the_fixed_schedule():
    from covidseg_core.cli.parser import build_parser
    from covidseg_core.cli.training_commands import _train_config

    parser = build_parser()
    for argv in (["--budget", "0"], ["--no-budget"]):
        args = parser.parse_args(["train", "--data", "d", "--out", "o", *argv])
        assert _train_config(args, seg=True).budget_minutes == 0
    args = parser.parse_args(["train", "--data", "d", "--out", "o", "--budget", "2.5"])
    assert _train_config(args, seg=True).budget_minutes == 2.5
    assert _train_config(parser.parse_args(["train", "--data", "d", "--out", "o"]), seg=True).budget_minutes is None


def test_covidseg_train_on_the_demo_with_a_small_budget(tmp_path, capsys):
    demo, run = tmp_path / "demo", tmp_path / "run"
    assert cli.main(["-q", "demo", "--out", str(demo), "--slices", "16", "--size", "64"]) == 0
    capsys.readouterr()
    assert cli.main(["-q", "train", "--data", str(demo), "--out", str(run), "--budget", "0.3"]) == 0
    out = json.loads(capsys.readouterr().out)
    plan = _plan(run)
    assert plan["budget_s"] == 18.0
    assert plan["stage1"]["how"] == "budget" and plan["stage1"]["epochs"] >= 1
    assert plan["stage2"]["how"] == "budget" and plan["stage2"]["epochs"] * plan["stage2"]["steps_per_epoch"] >= 1
    if not torch.cuda.is_available():
        assert (plan["size"], plan["base"]) == (64, CPU_BASE)    # never above the slices' own size
    assert out["plan"]["stage2"]["epochs"] == plan["stage2"]["epochs"]
    assert len(RunFolder(run).read_epochs("segmenter")) == plan["stage2"]["epochs"]


def test_covidseg_pseudo_on_a_budget_records_its_plan_and_reuses_it(tmp_path, capsys):
    from covidseg_core.pseudo_job import pseudo_job
    from covidseg_core.data import load_slice_set

    demo, run = tmp_path / "demo", tmp_path / "run"
    write_demo(demo, n_slices=12, size=48)
    assert cli.main(["-q", "pseudo", "--data", str(demo), "--out", str(run), "--budget", "0.2"]) == 0
    out = json.loads(capsys.readouterr().out)
    plan = _plan(run)
    assert plan["stage1"]["how"] == "budget" and plan["stage1"]["epochs"] >= 1 and plan["stage2"] is None
    assert out["plan"]["stage1"]["epochs"] == plan["stage1"]["epochs"] == out["classifier"]["epochs"]
    assert len(list((run / "pseudo").glob("*.png"))) == 12
    # the same command again reads the plan back instead of measuring
    events = []
    drive(pseudo_job(load_slice_set(demo), run, TrainConfig(budget_minutes=0.2), device="cpu",
                     clock=TickingClock(tick=100.0)), events.append)
    assert not [e for e in events if isinstance(e, Progress) and e.stage == "plan"]
    assert _plan(run) == plan
