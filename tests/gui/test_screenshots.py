"""scripts/screenshots.py captures every shot, and none of them is blank (a window that did not paint)."""
import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("screenshots_script", ROOT / "scripts" / "screenshots.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_blank_detection():
    import numpy as np
    from PIL import Image
    shots = load_script()
    tmp = Path(__import__("tempfile").mkdtemp())
    Image.fromarray(np.full((50, 80), 200, np.uint8)).save(tmp / "blank.png")
    Image.fromarray((np.random.default_rng(0).random((50, 80)) * 255).astype(np.uint8)).save(tmp / "busy.png")
    assert shots.is_blank(tmp / "blank.png")
    assert not shots.is_blank(tmp / "busy.png")


def test_screenshots_are_not_blank(qapp, tmp_path):
    shots = load_script()
    paths = shots.capture(tmp_path / "shots", shots.QUICK, work=tmp_path / "work", demo=shots.QUICK_DEMO)
    assert [p.stem for p in paths] == list(shots.SHOTS)
    for p in paths:
        assert p.is_file()
        assert not shots.is_blank(p), f"{p.name} is blank: {shots.image_stats(p)}"
