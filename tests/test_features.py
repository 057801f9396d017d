"""Feature extraction on the tiny target: stored features, sharding, vocabulary, reader, atomicity, the
shared few-shot context computed once and not stored, and mixtures read from per-source directories."""

import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from taps.features import extract_features, feature_bytes
from taps.shards import META, SHARD_NAME, FeatureMixture, FeatureSequence, FeatureShards, ShardWriter, read_meta
from taps.vocab import VOCAB, choose_vocab, load_vocab, write_vocab
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


def test_float32_features_equal_target_forward_within_rounding(target, data, tmp_path):
    # shard_tokens 16 with the default batch_tokens: rows run several to a padded forward
    _extract(target, data, tmp_path / "f", dtype=torch.float32)
    stored = list(FeatureShards(tmp_path / "f"))
    assert len(stored) == len(LENGTHS)
    for (ids, mask, _), seq in zip(_rows(), stored):
        assert seq.input_ids.tolist() == ids and seq.loss_mask.tolist() == [bool(m) for m in mask]
        assert seq.hidden.dtype == torch.float32
        torch.testing.assert_close(seq.hidden, _features(target, ids), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_tokens", [1, 24])
def test_batches_within_batch_tokens_give_the_features_of_one_row_at_a_time(target, data, tmp_path, batch_tokens):
    whole = _extract(target, data, tmp_path / "all", dtype=torch.float32)
    meta = _extract(target, data, tmp_path / "f", dtype=torch.float32, batch_tokens=batch_tokens)
    assert meta["batch_tokens"] == batch_tokens and meta["shard_sizes"] == whole["shard_sizes"]
    for a, b in zip(FeatureShards(tmp_path / "all"), FeatureShards(tmp_path / "f")):
        assert torch.equal(a.input_ids, b.input_ids)
        torch.testing.assert_close(a.hidden, b.hidden, rtol=1e-5, atol=1e-5)


def test_bfloat16_features_match_within_rounding(target, data, tmp_path):
    meta = _extract(target, data, tmp_path / "f")
    assert meta["dtype"] == "bfloat16"
    assert load_file(tmp_path / "f" / SHARD_NAME.format(0))["hidden"].dtype == torch.bfloat16
    for (ids, _, _), seq in zip(_rows(), FeatureShards(tmp_path / "f")):
        expected = _features(target, ids)
        assert torch.allclose(seq.hidden, expected, rtol=2 ** -8, atol=1e-5)


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
    added = [torch.randn(n, 2) for n in [4, 4, 4, 2, 3, 10, 1]]
    for hidden in added:
        writer.add(torch.arange(len(hidden)), torch.ones(len(hidden)), hidden)
    writer.flush()
    assert writer.sizes == [[2, 8], [3, 9], [1, 10], [1, 1]]
    assert writer.peak_tokens == 10
    written = torch.cat([load_file(tmp_path / name)["hidden"] for name in writer.names])
    assert torch.equal(written, torch.cat(added))  # the one buffer, reused shard after shard
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
    forward, calls = target.forward_batch, []

    def failing(*args):
        calls.append(1)
        if len(calls) == 3:
            [work] = [p for p in tmp_path.iterdir() if p.name.startswith(".f.")]
            assert (work / SHARD_NAME.format(0)).is_file()  # a shard is already on disk when it fails
            raise RuntimeError("boom")
        return forward(*args)

    monkeypatch.setattr(target, "forward_batch", failing)
    with pytest.raises(RuntimeError, match="boom"):
        _extract(target, data, tmp_path / "f", shard_tokens=4, batch_tokens=1)
    assert len(calls) == 3
    assert sorted(os.listdir(tmp_path)) == ["train.parquet"]


def test_failure_keeps_previous_output_and_success_replaces_it(target, data, tmp_path, monkeypatch):
    _extract(target, data, tmp_path / "f", limit=2)
    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(target, "forward_batch", broken)
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
    with pytest.raises(FileNotFoundError, match="absent.parquet.*prepare_data"):
        _extract(target, tmp_path / "absent.parquet", tmp_path / "f")
    with pytest.raises(FileNotFoundError, match="feature directory .*extract_features"):
        FeatureShards(tmp_path / "nowhere")
    _extract(target, data, tmp_path / "f")
    os.remove(tmp_path / "f" / SHARD_NAME.format(2))
    with pytest.raises(FileNotFoundError, match="shard-00002.safetensors.*extract_features"):
        FeatureShards(tmp_path / "f")
    os.remove(tmp_path / "f" / VOCAB)
    with pytest.raises(FileNotFoundError, match="vocab.safetensors"):
        load_vocab(tmp_path / "f")
    os.remove(tmp_path / "f" / META)
    with pytest.raises(FileNotFoundError, match="meta.json.*extract_features"):
        FeatureShards(tmp_path / "f")


def test_corrupt_shard_is_named(target, data, tmp_path):
    _extract(target, data, tmp_path / "f")
    path = tmp_path / "f" / SHARD_NAME.format(1)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="shard-00001.safetensors is truncated or unreadable"):
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


# ---------------------------------------------------------------- few-shot context and per-source mixtures

P = list(range(10, 20))  # a shared few-shot context of 10 tokens
# (ids, context, tokens the target must compute): rows of one context run as a batch on top of it,
# and a context reuses the part it shares with the context before
CONTEXT_ROWS = [
    (P + [1, 2, 3, 4, 5], 10, 15),  # first row: all of it
    (P + [6, 7, 8], 10, 3),  # the same context, in the same batch: only the answer
    (P[:6] + [30, 31, 32, 33, 40, 41], 10, 6),  # its context shares 6 tokens with the one before
    ([50, 51, 52, 53, 54, 55], 0, 6),  # no context
    ([50, 51, 52, 53, 54, 55, 9, 9, 1, 2, 3], 8, 11),  # a new context, shares nothing with the last one
    (P + [3, 3], 10, 12),  # the context differs from the one before at the first token
]


def _write_source(path, rows, source="a", orders=None):
    """rows: (ids, context); loss_mask 1 after the context; order: `orders` or the row index."""
    pq.write_table(pa.table({
        "input_ids": pa.array([ids for ids, _ in rows], type=pa.list_(pa.int32())),
        "loss_mask": pa.array([[0] * c + [1] * (len(ids) - c) for ids, c in rows], type=pa.list_(pa.int8())),
        "source": pa.array([source] * len(rows), type=pa.string()),
        "order": pa.array(orders if orders is not None else list(range(len(rows))), type=pa.int32()),
        "context": pa.array([c for _, c in rows], type=pa.int32()),
    }), path)
    return path


def test_the_context_is_computed_once_not_stored_and_the_rest_equals_a_full_forward(target, tmp_path):
    data = _write_source(tmp_path / "a.parquet", [(ids, c) for ids, c, _ in CONTEXT_ROWS], orders=[5, 0, 3, 1, 2, 4])
    meta = _extract(target, data, tmp_path / "f", dtype=torch.float32)
    stored = list(FeatureShards(tmp_path / "f"))
    assert len(stored) == len(CONTEXT_ROWS)
    for (ids, context, _), seq in zip(CONTEXT_ROWS, stored):
        assert seq.input_ids.tolist() == ids[context:] and seq.loss_mask.all()
        assert torch.allclose(seq.hidden, _features(target, ids)[context:], atol=1e-5, rtol=1e-5)
    assert meta["computed_tokens"] == sum(n for _, _, n in CONTEXT_ROWS) == 53
    assert meta["n_tokens"] == sum(len(ids) - c for ids, c, _ in CONTEXT_ROWS) == 21
    assert meta["orders"] == [5, 0, 3, 1, 2, 4] and meta["sources"] == ["a"] * 6


def test_rows_without_order_or_context_columns_are_stored_whole_in_row_order(target, data, tmp_path):
    meta = _extract(target, data, tmp_path / "f")
    assert meta["orders"] == list(range(len(LENGTHS))) and meta["computed_tokens"] == sum(LENGTHS)


SUFFIXES = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [2, 4]]


@pytest.fixture
def two_sources(target, tmp_path):
    """Sources a (orders 0..3) and b (orders stored shuffled), each with its own shared context, extracted once."""
    a = _write_source(tmp_path / "a.parquet", [(P + s, 10) for s in SUFFIXES], "a")
    b = _write_source(tmp_path / "b.parquet", [(P[::-1] + s, 10) for s in SUFFIXES], "b", orders=[3, 0, 2, 1])
    metas = [_extract(target, a, tmp_path / "fa", dtype=torch.float32),
             _extract(target, b, tmp_path / "fb", dtype=torch.float32)]
    assert [m["computed_tokens"] for m in metas] == [10 + sum(map(len, SUFFIXES))] * 2  # the context once each
    return tmp_path / "fa", tmp_path / "fb"


def _same(x, y):
    return torch.equal(x.input_ids, y.input_ids) and torch.equal(x.loss_mask, y.loss_mask) and torch.equal(
        x.hidden, y.hidden)


def test_a_mixture_reads_the_stored_sequences_with_order_below_count(target, two_sources):
    fa, fb = two_sources
    a, b = FeatureShards(fa), FeatureShards(fb)
    mixtures = {"math": FeatureMixture([(fa, 4)]), "chat": FeatureMixture([(fb, 4)]),
                "mixed": FeatureMixture([(fa, 2), (fb, 2)], fingerprint=target.fingerprint())}
    assert len(a) + len(b) == 8 and sum(len(m) for m in mixtures.values()) == 12  # nothing extracted twice
    expected = [a.sequence(0), a.sequence(1), b.sequence(1), b.sequence(3)]  # b's orders: [3, 0, 2, 1]
    mixed = mixtures["mixed"]
    assert all(_same(mixed.sequence(i), e) for i, e in enumerate(expected))
    assert [mixed.sequence(i).input_ids.tolist() for i in range(4)] == [SUFFIXES[i] for i in (0, 1, 1, 3)]
    assert mixed.lengths == [len(e.input_ids) for e in expected] and mixed.n_tokens == sum(mixed.lengths)
    assert all(_same(mixtures["chat"].sequence(i), b.sequence(i)) for i in range(4))
    assert torch.equal(mixed.d2t, a.d2t) and mixed.hidden_size == target.hidden_size
    assert len(FeatureMixture([(fa, None), (fb, 3)])) == 7
    assert _same(mixed.sequence(0, max_length=2), FeatureSequence(*(t[:2] for t in expected[0])))


def test_a_mixture_refuses_more_than_was_extracted_and_other_vocabularies(target, two_sources, tmp_path):
    fa, fb = two_sources
    with pytest.raises(ValueError, match="first 4 conversations of its source, fewer than the 5 asked for"):
        FeatureMixture([(fa, 2), (fb, 5)])
    other = _write_source(tmp_path / "c.parquet", [(P + s, 10) for s in SUFFIXES], "c")
    _extract(target, other, tmp_path / "fc", draft_vocab_size=8)
    with pytest.raises(ValueError, match="different draft vocabularies"):
        FeatureMixture([(fa, 2), (tmp_path / "fc", 2)])
    with pytest.raises(ValueError, match="embed_digest"):
        FeatureMixture([(fa, 2)], fingerprint=tiny_target(seed=1).fingerprint())
    with pytest.raises(ValueError, match="at least one"):
        FeatureMixture([])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_disk_estimate_is_the_shards_size_and_a_full_disk_is_refused_first(target, data, tmp_path, monkeypatch,
                                                                                 dtype):
    need = feature_bytes(data, target.hidden_size, dtype)
    out = tmp_path / "feats"
    _extract(target, data, out, dtype=dtype)
    shards = sum(p.stat().st_size for p in out.glob("shard-*.safetensors"))
    assert need <= shards <= 1.1 * need + 4096 * len(list(out.glob("shard-*")))  # + each file's header
    monkeypatch.setattr("taps.features.shutil.disk_usage", lambda d: shutil._ntuple_diskusage(10**12, 10**12, need - 1))
    with pytest.raises(OSError, match=r"needs ~.* GB and .* GB free.*feature_dtype"):
        _extract(target, data, tmp_path / "full", dtype=dtype)
    assert not (tmp_path / "full").exists() and not list(tmp_path.glob(".full*"))  # nothing half-written
