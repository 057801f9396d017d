"""Drafter architecture and checkpoints: round trip, target fingerprint, corrupt files."""

import os

import pytest
import torch

from taps.drafter import META, WEIGHTS, Drafter, DrafterConfig
from conftest import tiny_target


def _outputs(drafter):
    tokens = torch.tensor([[1, 2, 3]])
    features = torch.randn(1, 3, drafter.target.hidden_size, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 3, 3).masked_fill(torch.ones(3, 3, dtype=torch.bool).triu(1), float("-inf"))
    return drafter.logits(drafter(tokens, features, torch.arange(3)[None], mask))


def test_drafter_owns_only_fc_and_one_layer(target):
    drafter = Drafter(target)
    names = {n.split(".")[0] for n, _ in drafter.named_parameters()}
    assert names == {"fc", "layer"}
    assert len(drafter.layer.layers) == 1
    assert drafter.fc.weight.shape == (target.hidden_size, 2 * target.hidden_size)


def test_checkpoint_round_trip_gives_identical_outputs(target, tmp_path):
    d2t = torch.tensor([5, 1, 9, 30, 2])
    drafter = Drafter(target, DrafterConfig(backbone="hass", draft_vocab_size=5, seed=3), d2t=d2t)
    drafter.save(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [META, WEIGHTS]
    loaded = Drafter.load(str(tmp_path), target)
    assert loaded.config == drafter.config
    assert torch.equal(loaded.d2t, d2t)
    assert torch.equal(_outputs(loaded), _outputs(drafter))


def test_reduced_vocabulary_scores_the_mapped_rows_of_the_full_head(target):
    d2t = torch.tensor([7, 3, 40])
    full = Drafter(target, DrafterConfig(seed=1))
    reduced = Drafter(target, DrafterConfig(draft_vocab_size=3, seed=1), d2t=d2t)
    assert torch.allclose(_outputs(reduced), _outputs(full)[..., d2t])


def test_same_seed_same_initialisation(target):
    assert torch.equal(_outputs(Drafter(target)), _outputs(Drafter(target)))
    assert not torch.equal(_outputs(Drafter(target)), _outputs(Drafter(target, DrafterConfig(seed=1))))


def test_loading_against_another_target_is_refused(target, tmp_path):
    Drafter(target).save(str(tmp_path))
    with pytest.raises(ValueError, match="trained for target 'tiny-llama-0'.*embed_digest"):
        Drafter.load(str(tmp_path), tiny_target(seed=1))
    with pytest.raises(ValueError, match="vocab_size"):
        Drafter.load(str(tmp_path), tiny_target(vocab=32))


def test_corrupt_or_missing_checkpoint_files_are_clear_errors(target, tmp_path):
    Drafter(target).save(str(tmp_path))
    with open(tmp_path / WEIGHTS, "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match="drafter.safetensors is truncated or unreadable"):
        Drafter.load(str(tmp_path), target)
    os.remove(tmp_path / WEIGHTS)
    with pytest.raises(FileNotFoundError, match="no drafter checkpoint at .*drafter.safetensors"):
        Drafter.load(str(tmp_path), target)


@pytest.mark.parametrize("kwargs", [{"backbone": "medusa"}, {"draft_vocab_size": 0}])
def test_drafter_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DrafterConfig(**kwargs)


def test_d2t_must_fit_the_config_and_the_vocabulary(target):
    with pytest.raises(ValueError, match="d2t has 2 ids"):
        Drafter(target, DrafterConfig(draft_vocab_size=3), d2t=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="outside the target vocabulary"):
        Drafter(target, DrafterConfig(draft_vocab_size=2), d2t=torch.tensor([1, 999]))
