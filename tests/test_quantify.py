import json

import pytest

from covidseg_core.demo import make_demo_volume
from covidseg_core.errors import InputError
from covidseg_core.results.quantify import quantify, write_quantification
from covidseg_core.study import Study


def test_volume_in_ml_follows_spacing(tmp_path):
    hu, mask, _ = make_demo_volume(seed=0, n_slices=10, size=64)
    study = Study(hu, spacing=(2.0, 2.0, 5.0))
    res = quantify(study, mask)
    assert res["infected_ml"] == pytest.approx(mask.sum() * 20.0 / 1000.0, rel=1e-6)
    # the same mask at half the slice spacing is half the volume
    assert quantify(Study(hu, spacing=(2.0, 2.0, 2.5)), mask)["infected_ml"] == pytest.approx(res["infected_ml"] / 2)
    assert 0 < res["infected_percent"] < 50
    assert sum(r["infected_ml"] for r in res["slices"]) == pytest.approx(res["infected_ml"], rel=1e-3)
    j, c = write_quantification(res, tmp_path / "quant")
    assert json.loads(j.read_text())["infected_ml"] == res["infected_ml"]
    assert c.read_text().splitlines()[0].startswith("slice,slice_id,infected_ml")


def test_wrong_size_mask_is_refused():
    hu, mask, _ = make_demo_volume(seed=0, n_slices=4, size=32)
    with pytest.raises(InputError, match="wrong size"):
        quantify(Study(hu), mask[:, :16])
