"""Feature extraction on the tiny target: stored features, sharding, vocabulary, reader, atomicity."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from taps.features import (
    META, SHARD_NAME, VOCAB, FeatureShards, ShardWriter, choose_vocab, extract_features, load_vocab, read_meta,
    write_vocab,
)
from taps.generate import chain
from conftest import tiny_target

LENGTHS = [5, 12, 7, 3, 9, 11, 4, 8]  # shard_tokens=16 packs these as [5], [12], [7, 3], [9], [11, 4], [8]


def _rows(lengths=LENGTHS, vocab=64):
    gen = torch.Generator().manual_seed(0)
    rows = []
    for n in lengths:
        ids = torch.randint(0, vocab, (n,), generator=gen).tolist()
        rows.append((ids, [0] * (n // 2) + [1] * (n - n // 2), "math" if n % 2 else "chat"))
    return rows


def _write(path, rows):
    ids, masks, sources = zip(*rows)
    pq.write_table(pa.table({
        "input_ids": pa.array(ids, type=pa.list_(pa.int32())),
        "loss_mask": pa.array(masks, type=pa.list_(pa.int8())),
        "source": pa.array(sources, type=pa.string()),
    }), path)
    return path


@pytest.fixture
def data(tmp_path):
    return _write(tmp_path / "train.parquet", _rows())


def _extract(target, data, out, **kw):
    return extract_features(target, data, out, **{"shard_tokens": 16, "progress": False, **kw})


def _features(target, ids):
    ids = torch.tensor(ids)
    return target.forward(ids, chain(len(ids)), target.new_cache())


def test_float32_features_equal_target_forward_exactly(target, data, tmp_path):
    _extract(target, data, tmp_path / "f", dtype=torch.float32)
    stored = list(FeatureShards(tmp_path / "f"))
    assert len(stored) == len(LENGTHS)
    for (ids, mask, _), seq in zip(_rows(), stored):
        assert seq.input_ids.tolist() == ids and seq.loss_mask.tolist() == [bool(m) for m in mask]
        assert seq.hidden.dtype == torch.float32
        assert torch.equal(seq.hidden, _features(target, ids))


def test_bfloat16_features_match_within_rounding(target, data, tmp_path):
    meta = _extract(target, data, tmp_path / "f")
    assert meta["dtype"] == "bfloat16"
    assert load_file(tmp_path / "f" / SHARD_NAME.format(0))["hidden"].dtype == torch.bfloat16
    for (ids, _, _), seq in zip(_rows(), FeatureShards(tmp_path / "f")):
        expected = _features(target, ids)
        assert torch.allclose(seq.hidden, expected, rtol=2 ** -8, atol=1e-6)
        assert torch.equal(seq.hidden, expected.bfloat16().float())


def test_shards_split_at_shard_tokens_and_no_sequence_straddles(target, data, tmp_path):
    meta = _extract(target, data, tmp_path / "f")
    assert meta["shards"] == [SHARD_NAME.format(i) for i in range(6)]
    assert meta["shards"][0] == "shard-00000.safetensors"
    expected = [[5], [12], [7, 3], [9], [11, 4], [8]]
    for name, lengths in zip(meta["shards"], expected):
        shard = load_file(tmp_path / "f" / name)
        assert shard["offsets"].tolist() == torch.tensor([0, *lengths]).cumsum(0).tolist()
        assert shard["offsets"].dtype == torch.int64
        assert shard["input_ids"].dtype == torch.int32 and shard["loss_mask"].dtype == torch.int8
        assert shard["hidden"].shape == (sum(lengths), target.hidden_size) and sum(lengths) <= 16
    assert meta["shard_sizes"] == [[len(x), sum(x)] for x in expected]
    assert (meta["n_sequences"], meta["n_tokens"]) == (len(LENGTHS), sum(LENGTHS))
    assert meta["source_counts"] == {"chat": 3, "math": 5}
    assert sorted(os.listdir(tmp_path / "f")) == sorted([*meta["shards"], VOCAB, META])


def test_buffer_never_holds_more_than_one_shard(tmp_path):
    writer = ShardWriter(str(tmp_path), shard_tokens=10, dtype=torch.float32)
    for n in [4, 4, 4, 2, 3, 10, 1]:
        writer.add(torch.arange(n), torch.ones(n), torch.zeros(n, 2))
    writer.flush()
    assert writer.sizes == [[2, 8], [3, 9], [1, 10], [1, 1]]
    assert writer.peak_tokens == 10
    writer.add(torch.arange(25), torch.ones(25), torch.zeros(25, 2))  # longer than a shard: a shard of its own
    writer.add(torch.arange(2), torch.ones(2), torch.zeros(2, 2))
    writer.flush()
    assert writer.sizes[-2:] == [[1, 25], [1, 2]] and writer.peak_tokens == 25


def test_draft_vocab_is_most_frequent_assistant_tokens_ties_to_lower_id(target, tmp_path):
    # masked counts: 9, 3, 7 twice each; 2 once; 5 and 1 appear only unmasked
    rows = [([5, 9, 9, 3, 7], [0, 1, 1, 1, 1], "a"), ([7, 3, 1, 2], [1, 1, 0, 1], "a")]
    data = _write(tmp_path / "d.parquet", rows)
    meta = _extract(target, data, tmp_path / "f", draft_vocab_size=5)
    assert load_vocab(tmp_path / "f").tolist() == [3, 7, 9, 2, 0]
    assert meta["draft_vocab_coverage"] == 1.0
    counts = load_file(tmp_path / "f" / VOCAB)["counts"]
    assert counts.shape == (target.vocab_size,) and counts.dtype == torch.int64 and counts.sum() == 7
    meta = _extract(target, data, tmp_path / "g", draft_vocab_size=3, vocab_tokens="all")
    assert load_vocab(tmp_path / "g").tolist() == [3, 7, 9]
    assert meta["draft_vocab_coverage"] == 6 / 9


def test_full_vocab_without_draft_vocab_size(target, data, tmp_path):
    meta = _extract(target, data, tmp_path / "f")
    assert torch.equal(load_vocab(tmp_path / "f"), torch.arange(target.vocab_size))
    assert meta["draft_vocab_coverage"] == 1.0 and meta["draft_vocab_size"] is None
    assert choose_vocab(torch.tensor([0, 4, 4, 1]), 3).tolist() == [1, 2, 3]


def test_meta_records_target_and_settings(target, data, tmp_path):
    _extract(target, data, tmp_path / "f", limit=3)
    meta = read_meta(tmp_path / "f")
    assert meta["target"]["embed_digest"] == target.fingerprint().embed_digest
    assert (meta["n_sequences"], meta["hidden_size"], meta["limit"]) == (3, target.hidden_size, 3)
    assert json.loads((tmp_path / "f" / META).read_text()) == meta


def test_shuffle_is_deterministic_by_seed_and_keeps_every_sequence(target, data, tmp_path):
    _extract(target, data, tmp_path / "f")
    shards = FeatureShards(tmp_path / "f", fingerprint=target.fingerprint())
    order = lambda **kw: [tuple(s.input_ids.tolist()) for s in shards.sequences(**kw)]
    plain = order()
    assert plain == [tuple(ids) for ids, _, _ in _rows()] and len(shards) == len(plain)
    first = order(shuffle=True, seed=1)
    assert first == order(shuffle=True, seed=1) != plain
    assert first != order(shuffle=True, seed=2)
    assert sorted(first) == sorted(plain)


def test_features_of_another_target_are_refused(target, data, tmp_path):
    _extract(target, data, tmp_path / "f")
    with pytest.raises(ValueError, match="embed_digest"):
        FeatureShards(tmp_path / "f", fingerprint=tiny_target(seed=1).fingerprint())
    with pytest.raises(ValueError, match="hidden_size: 64 != 32"):
        FeatureShards(tmp_path / "f", fingerprint=tiny_target(hidden=32).fingerprint())


def test_failure_midway_leaves_no_output(target, data, tmp_path, monkeypatch):
    forward, calls = target.forward, []

    def failing(*args):
        calls.append(1)
        if len(calls) == 3:
            [work] = [p for p in tmp_path.iterdir() if p.name.startswith(".f.")]
            assert (work / SHARD_NAME.format(0)).is_file()  # a shard is already on disk when it fails
            raise RuntimeError("boom")
        return forward(*args)

    monkeypatch.setattr(target, "forward", failing)
    with pytest.raises(RuntimeError, match="boom"):
        _extract(target, data, tmp_path / "f", shard_tokens=4)
    assert len(calls) == 3
    assert sorted(os.listdir(tmp_path)) == ["train.parquet"]


def test_failure_keeps_previous_output_and_success_replaces_it(target, data, tmp_path, monkeypatch):
    _extract(target, data, tmp_path / "f", limit=2)
    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(target, "forward", broken)
    with pytest.raises(RuntimeError):
        _extract(target, data, tmp_path / "f")
    assert read_meta(tmp_path / "f")["n_sequences"] == 2
    monkeypatch.undo()
    _extract(target, data, tmp_path / "f")
    assert read_meta(tmp_path / "f")["n_sequences"] == len(LENGTHS)
    assert sorted(os.listdir(tmp_path)) == ["f", "train.parquet"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a feature directory"):
        _extract(target, data, tmp_path / "other")


def test_missing_files_name_the_file_and_the_step_that_writes_it(target, data, tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.parquet .*prepare_dataset"):
        _extract(target, tmp_path / "absent.parquet", tmp_path / "f")
    with pytest.raises(FileNotFoundError, match="feature directory .*extract_features"):
        FeatureShards(tmp_path / "nowhere")
    _extract(target, data, tmp_path / "f")
    os.remove(tmp_path / "f" / SHARD_NAME.format(2))
    with pytest.raises(FileNotFoundError, match="shard-00002.safetensors .*extract_features"):
        FeatureShards(tmp_path / "f")
    os.remove(tmp_path / "f" / VOCAB)
    with pytest.raises(FileNotFoundError, match="vocab.safetensors"):
        load_vocab(tmp_path / "f")
    os.remove(tmp_path / "f" / META)
    with pytest.raises(FileNotFoundError, match="meta.json .*extract_features"):
        FeatureShards(tmp_path / "f")


def test_corrupt_shard_is_named(target, data, tmp_path):
    _extract(target, data, tmp_path / "f")
    path = tmp_path / "f" / SHARD_NAME.format(1)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="shard-00001.safetensors is corrupt"):
        FeatureShards(tmp_path / "f")  # indexing the sequences already reads every shard's header


def test_random_access_equals_the_stream_and_a_shared_vocabulary_is_used(target, data, tmp_path):
    d2t = write_vocab([str(data)], target.vocab_size, 8, str(tmp_path / "vocab.safetensors"))
    _extract(target, data, tmp_path / "f", d2t=d2t)
    shards = FeatureShards(tmp_path / "f")
    assert torch.equal(shards.d2t, d2t) and torch.equal(load_vocab(tmp_path / "vocab.safetensors"), d2t)
    for i, seq in enumerate(shards.sequences()):
        got = shards.sequence(i)
        assert torch.equal(got.input_ids, seq.input_ids) and torch.equal(got.hidden.float(), seq.hidden)
        assert len(shards.sequence(i, max_length=3).input_ids) == min(3, shards.lengths[i])
