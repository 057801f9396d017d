"""Drafter training: hand-drawn HASS masks, the restricted CE, falling losses, exact resume."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

import taps.train as train_mod
from taps.drafter import Drafter
from taps.features import FeatureShards, extract_features
from taps.train import (TrainConfig, alignment_mask, batch_loss, build_drafter, distill_terms,
                        make_batch, plan_batches, train_drafter, unroll_inputs, unrolled_mask)
from taps.tree import additive_mask
from conftest import tiny_target


def write_features(target, directory, n_seqs=8, d2t=None, seed=0):
    """Features of random token sequences (length 12..24, the first 4 tokens unmasked), in 2+ shards."""
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(target.vocab_size, (int(torch.randint(12, 25, (1,), generator=g)),), generator=g)
            for _ in range(n_seqs)]
    data = os.path.join(os.path.dirname(directory), "data.parquet")
    pq.write_table(pa.table({"input_ids": [s.tolist() for s in seqs],
                             "loss_mask": [[0] * 4 + [1] * (len(s) - 4) for s in seqs],
                             "source": ["random"] * n_seqs}), data)
    extract_features(target, data, directory, shard_tokens=100, dtype=torch.float32, d2t=d2t, progress=False)
    return str(directory)


@pytest.fixture(scope="module")
def features(tmp_path_factory, target):
    return write_features(target, tmp_path_factory.mktemp("features"))


FAST = dict(lr=1e-2, epochs=10, batch_tokens=40, warmup_steps=2, noise=0.02, grad_clip=1.0, save_every=5)


# --- masks: hand-drawn ---------------------------------------------------------------------
def test_alignment_mask_step1_is_causal():
    assert torch.equal(alignment_mask(4, 1), torch.ones(4, 4, dtype=torch.bool).tril())


def test_alignment_mask_step2_matches_hand_drawn():
    #   keys: target f_0..f_3 | step-1 predictions at positions 0..3
    expected = torch.tensor([
        [0, 0, 0, 0, 1, 0, 0, 0],
        [1, 0, 0, 0, 0, 1, 0, 0],
        [1, 1, 0, 0, 0, 0, 1, 0],
        [1, 1, 1, 0, 0, 0, 0, 1],
    ], dtype=torch.bool)
    assert torch.equal(alignment_mask(4, 2), expected)


def test_alignment_mask_step3_matches_hand_drawn():
    expected = torch.tensor([
        [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        [0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0],
        [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0],
        [1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
    ], dtype=torch.bool)
    assert torch.equal(alignment_mask(4, 3), expected)


def test_unrolled_mask_stacks_each_steps_rows():
    m = unrolled_mask(3, 3)
    assert m.shape == (9, 9)
    assert torch.equal(m[0:3, 0:3], alignment_mask(3, 1)) and not m[0:3, 3:].any()
    assert torch.equal(m[3:6, 0:6], alignment_mask(3, 2)) and not m[3:6, 6:].any()
    assert torch.equal(m[6:9], alignment_mask(3, 3))


def test_one_forward_over_all_steps_equals_the_stepwise_unroll(target, features):
    """Block b of the single unrolled forward is exactly step b + 1 run on its own (with a cache)."""
    shards = FeatureShards(features)
    drafter = Drafter(target)
    batch = make_batch(shards, [0, 1], 64, "cpu", torch.float32)
    inputs = unroll_inputs(drafter, batch, batch.features, 3)
    L = batch.tokens.shape[1]
    mask = additive_mask(unrolled_mask(L, 3), torch.float32)
    with torch.no_grad():
        out = drafter(batch.tokens.repeat(1, 3), torch.cat(inputs, 1), batch.positions.repeat(1, 3), mask)
    for b in (1, 2):  # step b's prediction, shifted by one row, is step b + 1's input
        shifted = torch.cat([batch.features[:, :1], out[:, (b - 1) * L:b * L - 1]], dim=1)
        assert torch.allclose(shifted, inputs[b], atol=1e-5)


def test_padding_never_reaches_a_sequences_rows(target, features):
    shards = FeatureShards(features)
    drafter = Drafter(target)
    by_length = sorted(range(len(shards)), key=lambda i: shards.lengths[i])
    short, long_ = by_length[0], by_length[-1]
    alone = make_batch(shards, [short], 64, "cpu", torch.float32)
    padded = make_batch(shards, [long_, short], 64, "cpu", torch.float32)
    n = alone.lengths[0]
    assert padded.tokens.shape[1] > n and not padded.counted[1, n:].any()
    steps = zip(unroll_inputs(drafter, alone, alone.features, 3), unroll_inputs(drafter, padded, padded.features, 3))
    for a, b in steps:
        assert torch.allclose(a[0], b[1, :n], atol=1e-5)


# --- losses ----------------------------------------------------------------------------------
def test_reduced_vocabulary_ce_is_against_the_restricted_renormalised_target():
    full_p_logits = torch.tensor([[2.0, 0.5, -1.0, 1.0, 0.0, 3.0]])
    d2t = torch.tensor([0, 3, 5])
    q_logits = torch.tensor([[0.3, -0.2, 1.1]])
    ce, top, agree = distill_terms(q_logits, full_p_logits[:, d2t], topk=2)
    p_full = torch.softmax(full_p_logits, -1)[0]
    p = p_full[d2t] / p_full[d2t].sum()  # restricted to d2t and renormalised
    logq = torch.log_softmax(q_logits[0], -1)
    assert torch.allclose(ce, -(p * logq).sum()[None])
    assert torch.allclose(top, -(p[[2, 0]] * logq[[2, 0]]).sum()[None])  # top-2 of p: ids 5 and 0
    assert not torch.allclose(ce, -(p_full[d2t] * logq).sum()[None])  # unnormalised would differ
    assert agree.tolist() == [True]  # argmax q = draft id 2 = argmax p (target id 5)


def test_loss_counts_rows_whose_input_token_is_a_reply_token(target, features):
    shards = FeatureShards(features)
    batch = make_batch(shards, [0], 64, "cpu", torch.float32)
    shard = load_file(os.path.join(features, shards.meta["shards"][0]))  # sequence 0 opens shard 0
    ids, mask = shard["input_ids"], shard["loss_mask"]
    n = batch.lengths[0] + 1
    assert torch.equal(batch.tokens[0], ids[1:n].long())
    assert torch.equal(batch.counted[0], mask[1:n].bool())  # row i counts when loss_mask[i + 1] == 1


def test_plan_depends_only_on_seed_and_respects_the_budget():
    config = TrainConfig(epochs=3, batch_tokens=40, seed=4)
    lengths = [10, 21, 15, 5, 41, 12, 8, 9]
    plan = plan_batches(lengths, config)
    assert plan == plan_batches(lengths, config)
    assert plan != plan_batches(lengths, TrainConfig(epochs=3, batch_tokens=40, seed=5))
    for epoch in range(3):
        seqs = [i for e, b in plan if e == epoch for i in b]
        assert sorted(seqs) == list(range(8))
    # padded rows: count x longest (n - 1); the 41-token sequence goes alone
    assert all(len(b) == 1 or len(b) * max(lengths[i] - 1 for i in b) <= 40 for _, b in plan)


def test_config_validates_its_fields():
    with pytest.raises(ValueError, match="backbone"):
        TrainConfig(backbone="medusa")
    with pytest.raises(ValueError, match="hass_steps"):
        TrainConfig(hass_steps=0)
    with pytest.raises(ValueError, match="betas"):
        TrainConfig(betas=(0.9, 1.5))


# --- training --------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", ["eagle2", "hass"])
def test_losses_fall(target, tmp_path, backbone):
    # HASS on a reduced draft vocabulary (the 32 lowest ids), EAGLE-2 on the full one
    d2t = torch.arange(32) if backbone == "hass" else None
    features = write_features(target, tmp_path / "features", d2t=d2t)
    config = TrainConfig(backbone=backbone, **FAST)
    metrics = train_drafter(target, features, str(tmp_path / "run"), config, progress=False)
    assert len(metrics) >= 30
    head, tail = metrics[:10].mean(numeric_only=True), metrics[-10:].mean(numeric_only=True)
    # the CE terms have a floor (the entropy of a near-uniform random target): the loss falls less
    assert tail.loss < 0.8 * head.loss, (head.loss, tail.loss)
    assert tail.feature_loss < 0.6 * head.feature_loss, (head.feature_loss, tail.feature_loss)
    assert tail.top1 > head.top1 + 0.1
    saved = Drafter.load(str(tmp_path / "run" / "drafter"), target)
    assert saved.config.backbone == backbone
    assert saved.config.draft_vocab_size == (32 if d2t is not None else None)
    with open(tmp_path / "run" / "drafter" / "train_config.json") as f:
        assert json.load(f)["backbone"] == backbone


def _same_weights(dir_a, dir_b):
    a = load_file(os.path.join(dir_a, "drafter", "drafter.safetensors"))
    b = load_file(os.path.join(dir_b, "drafter", "drafter.safetensors"))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stopped_and_resumed_run_ends_with_identical_weights(target, features, tmp_path):
    config = TrainConfig(backbone="hass", **{**FAST, "epochs": 3, "save_every": 4})
    whole = train_drafter(target, features, str(tmp_path / "whole"), config, progress=False)
    part = train_drafter(target, features, str(tmp_path / "split"), config, progress=False, max_steps=6)
    assert len(part) == 6 and not os.path.exists(tmp_path / "split" / "drafter")
    resumed = train_drafter(target, features, str(tmp_path / "split"), config, progress=False)
    assert _same_weights(tmp_path / "whole", tmp_path / "split")
    assert resumed.step.tolist() == whole.step.tolist()
    assert resumed.loss.tolist() == whole.loss.tolist()


def test_killed_and_resumed_run_ends_with_identical_weights(target, features, tmp_path, monkeypatch):
    config = TrainConfig(**{**FAST, "epochs": 3, "save_every": 4})
    whole = train_drafter(target, features, str(tmp_path / "whole"), config, progress=False)
    real_step = train_mod.train_step

    def dies_at_step_6(drafter, optimizer, shards, plan, step, cfg):
        if step == 6:
            raise KeyboardInterrupt  # killed after 6 steps, 2 of them after the last checkpoint
        return real_step(drafter, optimizer, shards, plan, step, cfg)

    monkeypatch.setattr(train_mod, "train_step", dies_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train_drafter(target, features, str(tmp_path / "killed"), config, progress=False)
    monkeypatch.setattr(train_mod, "train_step", real_step)
    assert os.listdir(tmp_path / "killed" / "state") == ["step-00000004"]
    resumed = train_drafter(target, features, str(tmp_path / "killed"), config, progress=False)
    assert _same_weights(tmp_path / "whole", tmp_path / "killed")
    assert resumed.drop(columns="seconds").equals(whole.drop(columns="seconds"))


def test_resume_refuses_other_settings(target, features, tmp_path):
    config = TrainConfig(**{**FAST, "epochs": 1})
    train_drafter(target, features, str(tmp_path), config, progress=False, max_steps=2)
    with pytest.raises(ValueError, match="other settings"):
        train_drafter(target, features, str(tmp_path), TrainConfig(**{**FAST, "epochs": 1, "lr": 1e-4}),
                      progress=False)


def test_features_of_another_target_are_refused(features, tmp_path):
    with pytest.raises(ValueError, match="were extracted from target"):
        train_drafter(tiny_target(seed=1), features, str(tmp_path), TrainConfig(**FAST), progress=False)


def test_hass_warm_start_begins_from_the_eagle_checkpoint(target, features, tmp_path):
    eagle = TrainConfig(**{**FAST, "epochs": 1})
    train_drafter(target, features, str(tmp_path / "eagle"), eagle, progress=False)
    start = str(tmp_path / "eagle" / "drafter")
    hass = TrainConfig(backbone="hass", warm_start=start, **{**FAST, "epochs": 1})
    shards = FeatureShards(features)
    drafter = build_drafter(target, shards, hass)
    ref = Drafter.load(start, target)
    assert all(torch.equal(a, b) for a, b in zip(drafter.state_dict().values(), ref.state_dict().values()))
    loss, _ = batch_loss(drafter, make_batch(shards, [0, 1], 64, "cpu", torch.float32), hass, step=0)
    assert torch.isfinite(loss)
