"""Drafter training: hand-drawn HASS masks, the restricted CE, the split and the noise, falling losses,
best-by-validation selection, exact resume."""

import json
import os

import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

import taps.train as train_mod
import taps.validation as validation_mod
from taps.batching import Batch, make_batch, plan_batches, split_sequences
from taps.drafter import Drafter
from taps.features import extract_features
from taps.objective import alignment_mask, batch_loss, distill_terms, feature_noise, unroll_inputs, unrolled_mask
from taps.shards import FeatureShards
from taps.train import build_drafter, learning_rate, train_drafter
from taps.train_config import AGREEMENTS, TrainConfig
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


# noise 0.001 scaled by 512 / length: a half-width of ~0.026 on these 12..24-token sequences
FAST = dict(lr=1e-2, epochs=12, batch_tokens=40, warmup_steps=2, noise=0.001, grad_clip=1.0, save_every=5)


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
    config = TrainConfig(epochs=3, batch_tokens=40, seed=4, val_fraction=0.25)
    lengths = [10, 21, 15, 5, 41, 12, 8, 9]
    plan = plan_batches(lengths, config)
    assert plan == plan_batches(lengths, config)
    assert plan != plan_batches(lengths, TrainConfig(epochs=3, batch_tokens=40, seed=5, val_fraction=0.25))
    train, _ = split_sequences(8, 0.25, seed=4)
    for epoch in range(3):
        seqs = [i for e, b in plan if e == epoch for i in b]
        assert sorted(seqs) == train
    # padded rows: count x longest (n - 1); the 41-token sequence goes alone
    assert all(len(b) == 1 or len(b) * max(lengths[i] - 1 for i in b) <= 40 for _, b in plan)


def test_init_seed_changes_the_initial_weights_and_only_them(target, features):
    shards = FeatureShards(features, target.fingerprint())
    base, other = TrainConfig(seed=4, val_fraction=0.25), TrainConfig(seed=4, init_seed=9, val_fraction=0.25)
    a, b = build_drafter(target, shards, base), build_drafter(target, shards, other)

    def differing(x, y):
        return {n for (n, p), (_, q) in zip(x.named_parameters(), y.named_parameters()) if not torch.equal(p, q)}

    randomly_initialised = differing(a, build_drafter(target, shards, TrainConfig(seed=5, val_fraction=0.25)))
    assert "fc.weight" in randomly_initialised and differing(a, b) == randomly_initialised
    same = build_drafter(target, shards, TrainConfig(seed=4, init_seed=4, val_fraction=0.25))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), same.parameters()))  # init_seed = seed: no change
    # the split, the batch plan and the noise follow `seed` alone
    assert plan_batches(shards.lengths, other) == plan_batches(shards.lengths, base)
    assert split_sequences(8, other.val_fraction, other.seed) == split_sequences(8, base.val_fraction, base.seed)
    batch = Batch(tokens=torch.zeros(2, 15, dtype=torch.long), features=torch.zeros(2, 15, 8),
                  targets=torch.zeros(2, 15, 8), counted=torch.zeros(2, 15, dtype=torch.bool), lengths=(15, 15))
    noisy = dict(noise=0.1, seed=4, val_fraction=0.25)
    assert torch.equal(feature_noise(batch, TrainConfig(**noisy, init_seed=9), step=3),
                       feature_noise(batch, TrainConfig(**noisy), step=3))
    assert b.config.seed == 9  # the checkpoint records the seed its weights started from


def test_plan_holds_only_training_sequences():
    lengths = [12 + i % 7 for i in range(40)]
    config = TrainConfig(epochs=2, batch_tokens=60, seed=3, val_fraction=0.2)
    train, val = split_sequences(40, 0.2, seed=3)
    planned = {i for _, b in plan_batches(lengths, config) for i in b}
    assert planned == set(train) and not planned & set(val)
    no_validation = TrainConfig(epochs=2, batch_tokens=60, val_fraction=0)
    assert {i for _, b in plan_batches(lengths, no_validation) for i in b} == set(range(40))


def test_split_is_disjoint_covering_seeded_and_sized():
    train, val = split_sequences(100, 0.05, seed=0)
    assert sorted(train + val) == list(range(100)) and not set(train) & set(val)
    assert len(val) == 5
    assert split_sequences(100, 0.05, seed=0) == (train, val)
    assert split_sequences(100, 0.05, seed=1)[1] != val
    assert len(split_sequences(100, 0.3, seed=0)[1]) == 30
    assert len(split_sequences(8, 0.05, seed=0)[1]) == 1  # at least one held out
    assert split_sequences(8, 0.0, seed=0) == (list(range(8)), [])
    assert split_sequences(1, 0.5, seed=0) == ([0], [])  # nothing left to train on otherwise


def test_length_scaled_noise_has_half_width_noise_times_512_over_length():
    """EAGLE's AddUniformNoise: (rand - 0.5) * std * 512 / L, i.e. half-width (std / 2) * 512 / L."""
    rows = (19, 49)  # sequences of 20 and 50 tokens, padded to 49 rows
    batch = Batch(tokens=torch.zeros(2, 49, dtype=torch.long), features=torch.zeros(2, 49, 64),
                  targets=torch.zeros(2, 49, 64), counted=torch.zeros(2, 49, dtype=torch.bool), lengths=rows)
    config = TrainConfig(noise=0.1, noise_scale="length")
    noise = feature_noise(batch, config, step=7)
    for b, n in enumerate((20, 50)):
        width = 0.1 * 512 / n
        real = noise[b, :rows[b]].abs()  # [rows, H]: the sequence's own rows
        assert real.max() <= width and real.max() > 0.99 * width
    assert torch.equal(noise, feature_noise(batch, config, step=7))  # a function of (seed, step)
    assert not torch.equal(noise, feature_noise(batch, config, step=8))
    fixed = feature_noise(batch, TrainConfig(noise=0.1, noise_scale="fixed"), step=7)
    assert fixed.abs().max() <= 0.1 and fixed.abs().max() > 0.099
    assert torch.allclose(fixed[0] * 512 / 20, noise[0])  # the same draws, scaled


def test_cosine_schedule_warms_up_then_decays_to_zero():
    config = TrainConfig(lr=1.0, warmup_steps=10)
    assert config.decay == "cosine"
    lrs = [learning_rate(step, 110, config) for step in range(110)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[10] == 1.0 and lrs[60] == pytest.approx(0.5)
    assert lrs[35] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 1e-3
    linear = TrainConfig(lr=1.0, warmup_steps=10, decay="linear")
    assert learning_rate(60, 110, linear) == pytest.approx(0.5)
    assert learning_rate(35, 110, linear) == pytest.approx(0.75)


def test_config_validates_its_fields():
    with pytest.raises(ValueError, match="backbone"):
        TrainConfig(backbone="medusa")
    with pytest.raises(ValueError, match="hass_steps"):
        TrainConfig(hass_steps=0)
    with pytest.raises(ValueError, match="betas"):
        TrainConfig(betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="top1_step1"):  # the message lists the known names
        TrainConfig(select_by="accuracy")
    with pytest.raises(ValueError, match="val_fraction"):
        TrainConfig(val_fraction=1.0)
    with pytest.raises(ValueError, match="noise_scale"):
        TrainConfig(noise_scale="sqrt")


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
    assert _same_selection(tmp_path / "whole", tmp_path / "split")


def _same_selection(dir_a, dir_b):
    a, b = (pd.read_parquet(os.path.join(d, "val_metrics.parquet")) for d in (dir_a, dir_b))
    with open(os.path.join(dir_a, "drafter", "selection.json")) as fa, \
            open(os.path.join(dir_b, "drafter", "selection.json")) as fb:
        return a.equals(b) and json.load(fa) == json.load(fb)


def test_killed_after_any_step_and_resumed_run_ends_identical(target, features, tmp_path, monkeypatch):
    """Same weights, metrics, validation rows and selected epoch, wherever the run was killed."""
    config = TrainConfig(**{**FAST, "epochs": 4, "save_every": 4, "val_fraction": 0.25, "select_by": "loss"})
    whole = train_drafter(target, features, str(tmp_path / "whole"), config, progress=False)
    with open(tmp_path / "whole" / "drafter" / "selection.json") as f:
        assert 0 < json.load(f)["best_epoch"] < 3  # a middle epoch: the kept weights are not the last
    real_step = train_mod.train_step
    for kill in range(1, len(whole)):
        out = tmp_path / f"killed-{kill}"

        def dies(drafter, optimizer, shards, plan, step, cfg, parts):
            if step == kill:
                raise KeyboardInterrupt  # killed after `kill` steps, kill % 4 of them after the last checkpoint
            return real_step(drafter, optimizer, shards, plan, step, cfg, parts)

        monkeypatch.setattr(train_mod, "train_step", dies)
        with pytest.raises(KeyboardInterrupt):
            train_drafter(target, features, str(out), config, progress=False)
        monkeypatch.setattr(train_mod, "train_step", real_step)
        states = os.listdir(out / "state") if os.path.isdir(out / "state") else []
        assert states == ([f"step-{kill // 4 * 4:08d}"] if kill >= 4 else [])
        resumed = train_drafter(target, features, str(out), config, progress=False)
        assert _same_weights(tmp_path / "whole", out), kill
        assert resumed.drop(columns="seconds").equals(whole.drop(columns="seconds")), kill
        assert _same_selection(tmp_path / "whole", out), kill
        assert os.listdir(out / "best") == os.listdir(tmp_path / "whole" / "best"), kill


def test_resume_refuses_other_settings(target, features, tmp_path):
    config = TrainConfig(**{**FAST, "epochs": 1})
    train_drafter(target, features, str(tmp_path), config, progress=False, max_steps=2)
    with pytest.raises(ValueError, match="other settings"):
        train_drafter(target, features, str(tmp_path), TrainConfig(**{**FAST, "epochs": 1, "lr": 1e-4}),
                      progress=False)


def test_restart_discards_a_run_of_other_settings_and_trains_afresh(target, features, tmp_path):
    train_drafter(target, features, str(tmp_path / "old"), TrainConfig(**{**FAST, "epochs": 1}), progress=False)
    config = TrainConfig(**{**FAST, "epochs": 1, "lr": 1e-4})
    again = train_drafter(target, features, str(tmp_path / "old"), config, progress=False, restart=True)
    fresh = train_drafter(target, features, str(tmp_path / "new"), config, progress=False)
    assert again.drop(columns="seconds").equals(fresh.drop(columns="seconds"))
    assert _same_weights(tmp_path / "old", tmp_path / "new") and _same_selection(tmp_path / "old", tmp_path / "new")
    assert os.listdir(tmp_path / "old" / "best") == os.listdir(tmp_path / "new" / "best")


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


def test_eagle_architecture_trains_its_bias_and_warm_starts_only_from_its_own_layout(target, features, tmp_path):
    eagle = TrainConfig(**{**FAST, "epochs": 1, "architecture": "eagle"})
    train_drafter(target, features, str(tmp_path / "eagle"), eagle, progress=False)
    trained = Drafter.load(str(tmp_path / "eagle" / "drafter"), target)
    assert trained.config.architecture == "eagle" and trained.fc.bias.abs().sum() > 0  # the bias learned
    for arch in ("taps", "eagle"):
        hass = TrainConfig(backbone="hass", warm_start=str(tmp_path / "eagle" / "drafter"),
                           **{**FAST, "epochs": 1, "architecture": arch})
        if arch == "taps":
            with pytest.raises(ValueError, match="architecture 'eagle', this run 'taps'"):
                build_drafter(target, FeatureShards(features), hass)
        else:
            assert torch.equal(build_drafter(target, FeatureShards(features), hass).fc.bias, trained.fc.bias)


# --- validation and the kept epoch -------------------------------------------------------------
def test_validation_matches_a_per_sequence_forward_whatever_the_backbone(target, features):
    """Step-1 agreements of the batched validation = a causal forward of one sequence at a time."""
    shards, drafter = FeatureShards(features), Drafter(target)
    ids = [0, 2, 3, 5]
    got = validation_mod.validate(drafter, shards, ids, TrainConfig(batch_tokens=40))
    top1 = top3 = counted = 0
    for i in ids:
        b = make_batch(shards, [i], 64, "cpu", torch.float32)
        with torch.no_grad():
            pred = drafter(b.tokens, b.features, b.positions, additive_mask(alignment_mask(b.tokens.shape[1], 1),
                                                                             torch.float32))
            q, best = drafter.logits(pred[b.counted]), drafter.logits(b.targets[b.counted]).argmax(-1, keepdim=True)
        top1 += int((q.argmax(-1, keepdim=True) == best).sum())
        top3 += int((q.topk(3).indices == best).any(-1).sum())
        counted += len(q)
    assert got["counted"] == counted and got["sequences"] == 4
    assert got["top1_step1"] == pytest.approx(top1 / counted) and got["top3_step1"] == pytest.approx(top3 / counted)
    hass = validation_mod.validate(drafter, shards, ids, TrainConfig(backbone="hass", batch_tokens=40))
    assert all(hass[k] == pytest.approx(got[k]) for k in AGREEMENTS)  # 3 HASS steps for either backbone
    assert hass["loss"] > got["loss"]  # but the loss is the backbone's: HASS sums 3 steps and the top-K term
    assert drafter.training  # back in train mode


def test_line_losses_score_each_point_on_every_val_set_and_average_them(target, features, tmp_path):
    """Each point of a line is loaded from its directory and scored by `validate` on every held-out set; the
    loss is their mean, so a point's own weights (not a neighbour's) decide its loss."""
    shards, config = FeatureShards(features), TrainConfig(batch_tokens=40)
    a, b = Drafter(target), Drafter(target)
    with torch.no_grad():
        b.fc.weight.mul_(3.0)  # another point of the line
    a.save(str(tmp_path / "a"))
    b.save(str(tmp_path / "b"))
    sets = {"x": (shards, [0, 2]), "y": (shards, [3, 5])}
    points, cache = {0.0: str(tmp_path / "a"), 1.0: str(tmp_path / "b")}, {}
    got = validation_mod.line_losses(points, sets, target, config, cache)
    for alpha, drafter in ((0.0, a), (1.0, b)):
        want = sum(validation_mod.validate(drafter, s, ids, config)["loss"] for s, ids in sets.values()) / 2
        assert got[alpha] == pytest.approx(want)
    assert got[0.0] != pytest.approx(got[1.0])  # each point's own weights were scored
    assert sorted(cache) == sorted((d, n) for d in points.values() for n in sets)  # each pair scored once
    cache[points[0.0], "x"] = 123.0  # another line reads a scored pair from the cache, not scoring it again
    assert validation_mod.line_losses({0.5: points[0.0]}, {"x": sets["x"]}, target, config, cache) == {0.5: 123.0}


def test_val_metrics_has_one_row_per_epoch(target, features, tmp_path):
    config = TrainConfig(**{**FAST, "epochs": 3, "val_fraction": 0.25})
    metrics = train_drafter(target, features, str(tmp_path), config, progress=False)
    val = pd.read_parquet(tmp_path / "val_metrics.parquet")
    assert val.epoch.tolist() == [0, 1, 2]
    assert val.step.tolist() == [int(metrics[metrics.epoch == e].step.max()) + 1 for e in range(3)]
    for column in ("loss", "feature_loss", "ce_loss", "topk_loss", *AGREEMENTS):
        assert column in val and val[column].notna().all()
    assert ((val[list(AGREEMENTS)] >= 0) & (val[list(AGREEMENTS)] <= 1)).all().all()
    for j in (1, 2, 3):
        assert (val[f"top3_step{j}"] >= val[f"top1_step{j}"]).all()
    assert (val.sequences == 2).all() and (val.counted > 0).all()
    _, held_out = split_sequences(8, 0.25, config.seed)
    assert not {i for _, b in plan_batches(FeatureShards(features).lengths, config) for i in b} & set(held_out)


@pytest.mark.parametrize("select_by, scores, best", [
    ("top1_step1", [0.2, 0.6, 0.4, 0.6], 1),  # higher is better; a tie keeps the earlier epoch
    ("loss", [float("nan"), 2.0, 1.0, 1.5], 2),  # lower is better; a diverged (NaN) epoch is never kept
])
def test_the_best_epoch_by_validation_becomes_the_drafter(target, features, tmp_path, monkeypatch,
                                                          select_by, scores, best):
    captured = []

    def scripted(drafter, shards, val_ids, config):  # the weights each validation sees, and a scripted score
        captured.append({k: v.clone() for k, v in drafter.state_dict().items()})
        return {"loss": 1.0, "top1_step1": 0.5, select_by: scores[len(captured) - 1]}

    monkeypatch.setattr(validation_mod, "validate", scripted)
    config = TrainConfig(**{**FAST, "epochs": 4, "select_by": select_by})
    train_drafter(target, features, str(tmp_path), config, progress=False)
    assert len(captured) == 4
    kept = load_file(os.path.join(tmp_path, "drafter", "drafter.safetensors"))
    assert kept.keys() == captured[best].keys() and all(torch.equal(kept[k], captured[best][k]) for k in kept)
    assert not all(torch.equal(kept[k], captured[-1][k]) for k in kept)
    with open(tmp_path / "drafter" / "selection.json") as f:
        assert json.load(f) == {"select_by": select_by, "best_epoch": best,
                                "step": int(pd.read_parquet(tmp_path / "val_metrics.parquet").step[best]),
                                "value": scores[best]}
    with open(tmp_path / "drafter" / "train_config.json") as f:
        assert json.load(f)["select_by"] == select_by  # train_config.json stays the config
    assert os.listdir(tmp_path / "best") == [f"epoch-{best:04d}"]
    Drafter.load(str(tmp_path / "drafter"), target)  # a loadable checkpoint


def test_without_validation_the_last_weights_are_kept(target, features, tmp_path):
    config = TrainConfig(**{**FAST, "epochs": 2, "val_fraction": 0})
    metrics = train_drafter(target, features, str(tmp_path), config, progress=False)
    assert not os.path.exists(tmp_path / "val_metrics.parquet") and not os.path.exists(tmp_path / "best")
    assert not os.path.exists(tmp_path / "drafter" / "selection.json")
    last = load_file(os.path.join(tmp_path, "state", f"step-{len(metrics):08d}", "drafter.safetensors"))
    kept = load_file(os.path.join(tmp_path, "drafter", "drafter.safetensors"))
    assert all(torch.equal(kept[k], last[k]) for k in kept)
    assert {i for _, b in plan_batches(FeatureShards(features).lengths, config) for i in b} == set(range(8))


def test_features_may_be_an_object_read_like_feature_shards(target, features, tmp_path):
    """A ready object (e.g. a selection of sequences) is used as is, with the same result as its directory."""
    config = TrainConfig(**{**FAST, "epochs": 2})
    train_drafter(target, features, str(tmp_path / "path"), config, progress=False)
    train_drafter(target, FeatureShards(features, target.fingerprint()), str(tmp_path / "object"), config,
                  progress=False)
    assert _same_weights(tmp_path / "path", tmp_path / "object")


# --- mixed precision -------------------------------------------------------------------------
def test_over_a_bf16_target_master_weights_stay_fp32_and_small_steps_change_them(tmp_path):
    target = tiny_target(dtype=torch.bfloat16)
    shards = FeatureShards(write_features(target, tmp_path / "features"))
    config = TrainConfig(**{**FAST, "lr": 1e-6, "warmup_steps": 0, "val_fraction": 0})
    drafter = build_drafter(target, shards, config)
    optimizer = torch.optim.AdamW(drafter.parameters(), lr=config.lr)
    before = {k: v.clone() for k, v in drafter.named_parameters()}
    train_mod.train_step(drafter, optimizer, shards, plan_batches(shards.lengths, config), 0, config)
    for name, param in drafter.named_parameters():
        assert param.dtype == torch.float32 and param.grad.dtype == torch.float32, name
        assert all(s.dtype == torch.float32 for s in optimizer.state[param].values() if s.ndim), name
    weight, old = drafter.fc.weight.detach(), before["fc.weight"]
    assert (weight != old).float().mean() > 0.9  # an lr-1e-6 AdamW step moves (nearly) every weight...
    assert (weight.bfloat16() == old.bfloat16()).float().mean() > 0.9  # ...by less than bf16 weights could hold


def test_a_bf16_target_trains_end_to_end_and_the_drafter_is_saved_in_the_checkpoint_dtype(tmp_path):
    target = tiny_target(dtype=torch.bfloat16)
    features = write_features(target, tmp_path / "features")
    config = TrainConfig(**{**FAST, "epochs": 2, "val_fraction": 0, "checkpoint_dtype": "bfloat16"})
    metrics = train_drafter(target, features, str(tmp_path / "run"), config, progress=False)
    assert metrics.loss.notna().all()
    saved = load_file(str(tmp_path / "run" / "drafter" / "drafter.safetensors"))
    state = load_file(next((tmp_path / "run" / "state").glob("step-*")) / "drafter.safetensors")
    assert saved["fc.weight"].dtype == torch.bfloat16 and state["fc.weight"].dtype == torch.float32
    assert torch.equal(saved["fc.weight"], state["fc.weight"].bfloat16())  # no validation: the last weights
    assert Drafter.load(str(tmp_path / "run" / "drafter"), target).fc.weight.dtype == torch.bfloat16
