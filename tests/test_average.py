"""Weight averaging: exact point-wise means, weights respected, incompatible checkpoints refused."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from taps.average import average_checkpoints, average_drafters
from taps.drafter import WEIGHTS, Drafter, DrafterConfig
from conftest import tiny_target


def _saved(target, directory, seed, backbone="eagle2", d2t=None):
    config = DrafterConfig(backbone=backbone, seed=seed, draft_vocab_size=None if d2t is None else d2t.numel())
    Drafter(target, config, d2t=d2t).save(str(directory))
    return str(directory)


def _floats(directory):
    return {k: v for k, v in load_file(os.path.join(directory, WEIGHTS)).items() if v.is_floating_point()}


def test_averaging_a_drafter_with_itself_returns_it(target, tmp_path):
    a = _saved(target, tmp_path / "a", seed=1)
    mean = average_drafters([a, a, a], target)
    ref = Drafter.load(a, target)
    assert all(torch.equal(x, y) for x, y in zip(mean.state_dict().values(), ref.state_dict().values()))


def test_average_of_two_is_the_exact_mean_of_every_tensor(target, tmp_path):
    a = _saved(target, tmp_path / "a", seed=1, backbone="hass")
    b = _saved(target, tmp_path / "b", seed=2, backbone="hass")
    average_checkpoints([a, b], str(tmp_path / "mean"), target)
    ta, tb, tm = _floats(a), _floats(b), _floats(tmp_path / "mean")
    assert ta.keys() == tm.keys() and len(tm) > 5
    assert all(torch.equal(tm[k], (ta[k] + tb[k]) / 2) for k in tm)
    assert Drafter.load(str(tmp_path / "mean"), target).config.backbone == "hass"
    with open(tmp_path / "mean" / "average.json") as f:
        assert json.load(f)["weights"] == [0.5, 0.5]


def test_weights_are_respected(target, tmp_path):
    d2t = torch.tensor([3, 1, 4, 15, 9])
    a = _saved(target, tmp_path / "a", seed=1, d2t=d2t)
    b = _saved(target, tmp_path / "b", seed=2, d2t=d2t)
    mean = average_drafters([a, b], target, weights=[0.25, 0.75])
    ta, tb = _floats(a), _floats(b)
    got = mean.state_dict()
    assert all(torch.equal(got[k], (0.25 * ta[k].double() + 0.75 * tb[k].double()).float()) for k in ta)
    assert torch.equal(mean.d2t, d2t) and mean.config.draft_vocab_size == 5


@pytest.mark.parametrize("weights", [[0.5, 0.6], [1.5, -0.5], [1.0]])
def test_bad_weights_are_refused(target, tmp_path, weights):
    a = _saved(target, tmp_path / "a", seed=1)
    with pytest.raises(ValueError, match="weights"):
        average_drafters([a, a], target, weights=weights)


def test_drafters_of_another_target_are_refused(target, tmp_path):
    a = _saved(target, tmp_path / "a", seed=1)
    other = _saved(tiny_target(seed=1), tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match=r"other.*embed_digest"):
        average_drafters([a, other], target)


def test_other_draft_vocabularies_are_refused(target, tmp_path):
    a = _saved(target, tmp_path / "a", seed=1, d2t=torch.tensor([1, 2, 3]))
    b = _saved(target, tmp_path / "b", seed=2, d2t=torch.tensor([1, 2, 4]))
    with pytest.raises(ValueError, match=r"'.*b'.*draft vocabulary \(d2t\)"):
        average_drafters([a, b], target)
    full = _saved(target, tmp_path / "full", seed=3)
    with pytest.raises(ValueError, match=r"full.*'d2t'"):  # a different d2t size: caught as a shape
        average_drafters([a, full], target)


def test_other_shapes_are_refused(target, tmp_path):
    a = _saved(target, tmp_path / "a", seed=1)
    b = _saved(target, tmp_path / "b", seed=2)
    tensors = load_file(os.path.join(b, WEIGHTS))
    tensors["fc.weight"] = tensors["fc.weight"][:, :-1].contiguous()
    save_file(tensors, os.path.join(b, WEIGHTS))
    with pytest.raises(ValueError, match=r"'.*b'.*'fc.weight'"):
        average_drafters([a, b], target)


def test_line_distances_measure_the_experts_apart_and_from_their_initialisations(target, tmp_path):
    from taps.average import initial_drafter, line_distances, parameter_distance
    from taps.drafter import DrafterConfig
    fresh = Drafter(target, DrafterConfig(seed=3), dtype=torch.float32)
    assert parameter_distance(fresh, initial_drafter(fresh, target)) == 0.0  # an untrained drafter is its init
    moved = Drafter(target, DrafterConfig(seed=3), dtype=torch.float32)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(0.5)  # every parameter 0.5 away
    other = Drafter(target, DrafterConfig(seed=4), dtype=torch.float32)
    moved.save(str(tmp_path / "a"))
    other.save(str(tmp_path / "b"))
    got = line_distances(str(tmp_path / "a"), str(tmp_path / "b"), target)
    assert got["first_from_init"] == pytest.approx(0.5) and got["second_from_init"] == 0.0
    assert got["inits_apart"] > 0 and got["between"] == pytest.approx(parameter_distance(moved, other))
