"""A foreign checkpoint (random bytes, text, a pickle with code in it, a classifier where a segmenter is
expected) is a clear error that says the run is damaged or of another kind, never PyTorch's advice to load it
unsafely (issue 15, item 6)."""
from __future__ import annotations

import os

import pytest
import torch

from covidseg_core import cli
from covidseg_core.demo import write_demo
from covidseg_core.errors import RunError
from covidseg_core.models.classifier import build_classifier
from covidseg_core.runs import BEST, RunFolder
from untrained_run import make_untrained_run


class NotAllowed:
    """Unpickling this needs code from the file: weights_only refuses it."""


def _classifier_checkpoint(path):
    model = build_classifier({"in_ch": 1, "width": 8})
    torch.save({"model": model.state_dict(), "spec": model.spec, "size": 32, "epoch": 1}, path)


FOREIGN = {
    "random bytes": lambda p: p.write_bytes(os.urandom(512)),
    "text": lambda p: p.write_text("these are my notes\n"),
    "a pickle with code": lambda p: torch.save({"model": NotAllowed()}, p),
    "a list": lambda p: torch.save([1, 2, 3], p),
    "a classifier": _classifier_checkpoint,
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("foreign") / "study"
    write_demo(out, n_slices=4, size=32)
    return out


@pytest.mark.parametrize("what", FOREIGN)
def test_predict_with_a_foreign_checkpoint_is_one_clear_line(demo, tmp_path, capsys, what):
    run = make_untrained_run(tmp_path / "run")
    FOREIGN[what](RunFolder(run).checkpoint_path(BEST))
    rc = cli.main(["-q", "predict", "--run", str(run), "--input", str(demo / "images"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("covidseg: error:"), err
    assert "weights_only" not in err and "Traceback" not in err
    assert "damaged" in err or "another kind" in err


def test_a_segmenter_checkpoint_is_not_taken_as_the_classifier(tmp_path):
    run = RunFolder(make_untrained_run(tmp_path / "run"))
    run.classifier_path.write_bytes(run.checkpoint_path(BEST).read_bytes())
    with pytest.raises(RunError, match="holds a segmenter, not a stage-1 classifier"):
        run.load_classifier()
    _classifier_checkpoint(run.classifier_path)
    assert run.load_classifier()["spec"]["name"] == "cam_classifier"
