"""benchmarks/label_order.py's pickers (who labels what), on fake volumes and fake probabilities."""
import importlib.util
import pathlib

import numpy as np
import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "label_order.py"


@pytest.fixture(scope="module")
def lo():
    spec = importlib.util.spec_from_file_location("label_order", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _volumes():
    """Two volumes of 6 and 4 half slices, their ids out of order."""
    ids = ["b_0001_R.png", "a_0000_L.png", "a_0000_R.png", "b_0000_L.png", "a_0001_L.png", "a_0001_R.png",
           "b_0000_R.png", "a_0002_L.png", "a_0002_R.png", "b_0001_L.png"]
    return ids, [s[0] for s in ids]


def test_volume_positions_are_in_file_order(lo):
    ids, groups = _volumes()
    pos = lo.volume_positions(ids, groups)
    assert list(pos) == ["a", "b"]
    assert [ids[i] for i in pos["b"]] == ["b_0000_L.png", "b_0000_R.png", "b_0001_L.png", "b_0001_R.png"]


def test_in_order_takes_the_volumes_in_turn_from_the_top(lo):
    ids, groups = _volumes()
    order = [ids[i] for i in lo.in_order(lo.volume_positions(ids, groups))]
    assert order[:4] == ["a_0000_L.png", "b_0000_L.png", "a_0000_R.png", "b_0000_R.png"]
    assert order[-2:] == ["a_0002_L.png", "a_0002_R.png"] and len(order) == len(ids)


def test_at_random_is_a_seeded_permutation(lo):
    assert sorted(lo.at_random(10, 0)) == list(range(10))
    assert lo.at_random(10, 0) == lo.at_random(10, 0) != lo.at_random(10, 1)


def test_first_k_swaps_in_the_missing_kind_in_order(lo):
    infected = np.array([1, 1, 1, 1, 1, 0, 1, 0, 0, 1], bool)
    order = list(range(10))
    picks, swapped = lo.first_k(order, 5, infected)       # 5 infected: the last two go, clean 5 and 7 come
    assert picks == [0, 1, 2, 5, 7] and swapped == 2 and lo.trainable(picks, infected)
    assert lo.first_k(order, 8, infected) == ([0, 1, 2, 3, 4, 5, 6, 7], 0)


def test_first_k_cannot_train_without_both_kinds(lo):
    infected = np.array([1, 1, 1, 1, 1, 0], bool)
    picks, _ = lo.first_k(list(range(6)), 4, infected)
    assert not lo.trainable(picks, infected)
    assert not lo.trainable([0, 1, 5], infected)


def test_suggested_prefers_uncertain_unlabelled_slices_in_both_volumes(lo):
    ids, groups = _volumes()
    pos = lo.volume_positions(ids, groups)
    probs = np.full(len(ids), 0.02)
    uncertain_a, uncertain_b = pos["a"][4], pos["b"][3]
    probs[[uncertain_a, uncertain_b]] = 0.5
    labelled = [pos["a"][0], uncertain_b]                  # b's uncertain slice is labelled already
    picks = lo.suggested(probs, labelled, pos, 2)
    assert picks[0] == uncertain_a and not set(picks) & set(labelled)
    assert groups[picks[1]] == "b"                         # then the study with fewer labels
