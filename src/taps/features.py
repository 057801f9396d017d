"""Feature extraction: the target's last hidden state for every training token, in shards.

EAGLE drafters learn from the target's last hidden state (the lm_head's input). It is computed
once here, several sequences per forward (right-padded batches of at most `batch_tokens`
padded tokens), and streamed into sharded safetensors files (`taps.shards.ShardWriter`: host
memory stays at one shard however large the data). The reduced draft vocabulary is chosen here
too, from token frequencies counted in the same pass (`taps.vocab`), and saved beside the
features. The output directory's format, and `FeatureShards`, which reads it back for
training: `taps.shards`.

Few-shot context. A row may start with `context` tokens of few-shot exemplars shared by the
source's rows (`taps.prompts`, `taps.answers`). They are run through the target once
(`ContextCache`: the next context reuses what it shares with the last one) and not stored: the
rows of one context run as a batch on top of its cache, and a stored sequence starts after it,
its features computed with it in view. meta.json keeps each stored sequence's source and
`order`, by which `taps.shards.FeatureMixture` builds training mixtures. `context_features` is
also how online features (`taps.online`) are computed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm

from taps.generate import chain
from taps.intermediates import reading
from taps.rows import require_data, target_rows
from taps.shards import FEATURE_DTYPES, META, ShardWriter
from taps.target import TargetModel
from taps.vocab import VOCAB, VOCAB_TOKENS, choose_vocab


class ContextCache:
    """The KV cache (one sequence) of the last few-shot context run; the next one reuses what it shares."""

    def __init__(self, target: TargetModel):
        self.target, self.ids, self.cache = target, torch.zeros(0, dtype=torch.int64), target.new_cache()
        self.computed = 0  # context tokens the target has run

    def get(self, context: Tensor):
        """The cache of `context` ([c] ids), or None for an empty context."""
        if not len(context):
            return None
        reuse = _shared_prefix(self.ids, context)
        if reuse == 0:
            self.cache = self.target.new_cache()
        elif reuse < self.cache.get_seq_length():
            self.cache.crop(reuse - self.cache.get_seq_length())  # a negative count drops that many tokens
        if reuse < len(context):
            self.target.forward(context[reuse:], chain(len(context) - reuse), self.cache)
            self.computed += len(context) - reuse
        self.ids = context
        return self.cache


def context_features(target: TargetModel, rows: list[tuple[Tensor, int]], contexts: ContextCache) -> list[Tensor]:
    """Features [n_i - context_i, H] of each row's tokens after its few-shot context.

    rows: (ids [n_i], context_i). Rows with the same context run in one padded forward on top
    of its cache (`TargetModel.forward_batch`); the context itself is computed once (`contexts`).
    """
    out: list[Tensor | None] = [None] * len(rows)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ids, context) in enumerate(rows):
        groups.setdefault(tuple(ids[:context].tolist()), []).append(i)
    for context, members in groups.items():
        cache = contexts.get(torch.tensor(context, dtype=torch.int64))
        hidden = target.forward_batch([rows[i][0][len(context):] for i in members], cache)
        for i, h in zip(members, hidden):
            out[i] = h
    return out


def _extract_into(target: TargetModel, data_path, writer: ShardWriter, limit: int | None,
                  vocab_tokens: str, progress: bool, batch_tokens: int) -> dict:
    """Run every row through the target into `writer`; returns token counts, sources, orders, timing.

    Consecutive rows with the same few-shot context form a batch while its padded size (rows x
    the longest part after the context) stays within `batch_tokens` (a longer row goes alone);
    the context runs once (`context_features`) and is not stored (training never reads it).
    """
    counts = torch.zeros(target.vocab_size, dtype=torch.int64)
    sources: Counter = Counter()
    orders, names = [], []
    with reading(data_path, "training data"):
        rows = pq.ParquetFile(data_path).metadata.num_rows
    total = rows if limit is None else min(rows, limit)
    contexts, batch = ContextCache(target), []
    done = {"tokens": 0, "computed": 0, "start": time.perf_counter()}

    def run(bar) -> None:
        hidden = context_features(target, [(r.input_ids, r.context) for r in batch], contexts)
        for r, h in zip(batch, hidden):
            writer.add(r.input_ids[r.context:], r.loss_mask[r.context:], h)
            counted = r.input_ids if vocab_tokens == "all" else r.input_ids[r.loss_mask == 1]
            counts.index_add_(0, counted, torch.ones_like(counted))
            sources[r.source] += 1
            orders.append(r.order)
            names.append(r.source)
            done["tokens"] += len(r.input_ids) - r.context
        done["computed"] = contexts.computed + done["tokens"]
        bar.set_postfix(tok_s=f"{done['computed'] / (time.perf_counter() - done['start']):.0f}", refresh=False)
        bar.update(len(batch))
        batch.clear()

    with tqdm(total=total, desc="features", unit="seq", disable=not progress) as bar:
        for row in target_rows(target, data_path, limit):
            longest = max([len(r.input_ids) - r.context for r in batch] + [len(row.input_ids) - row.context])
            if batch and (not torch.equal(batch[0].input_ids[:batch[0].context], row.input_ids[:row.context])
                          or (len(batch) + 1) * longest > batch_tokens):
                run(bar)
            batch.append(row)
        if batch:
            run(bar)
    writer.flush()
    return {"counts": counts, "sources": sources, "orders": orders, "names": names,
            "computed_tokens": done["computed"], "seconds": time.perf_counter() - done["start"]}


def _shared_prefix(a: Tensor, b: Tensor) -> int:
    """Length of the common prefix of two id sequences."""
    n = min(len(a), len(b))
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0]) if len(differ) else n


def _publish(tmp: str, out_dir: str) -> None:
    """Rename the finished `tmp` onto `out_dir`; an existing out_dir is moved aside first, deleted last."""
    if not os.path.exists(out_dir):
        os.replace(tmp, out_dir)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=os.path.dirname(out_dir))
    os.replace(out_dir, old)  # onto an empty directory: allowed
    os.replace(tmp, out_dir)
    shutil.rmtree(old)


def _check_destination(out_dir: str) -> None:
    """Refuse to replace anything but a previous feature directory (or an empty one)."""
    if os.path.exists(out_dir) and not (os.path.isdir(out_dir) and (
            not os.listdir(out_dir) or os.path.isfile(os.path.join(out_dir, META)))):
        raise FileExistsError(f"{out_dir} exists and is not a feature directory (no {META}); "
                              "refusing to replace it")


def _check_settings(target: TargetModel, shard_tokens: int, dtype: torch.dtype, draft_vocab_size: int | None,
                    limit: int | None, vocab_tokens: str) -> None:
    name = str(dtype).removeprefix("torch.")
    if name not in FEATURE_DTYPES:
        raise ValueError(f"feature dtype must be one of {sorted(FEATURE_DTYPES)}, got {name}")
    if vocab_tokens not in VOCAB_TOKENS:
        raise ValueError(f"vocab_tokens must be one of {VOCAB_TOKENS}, got {vocab_tokens!r}")
    if shard_tokens < 1 or (limit is not None and limit < 1):
        raise ValueError(f"shard_tokens and limit must be >= 1, got {shard_tokens} and {limit}")
    if draft_vocab_size is not None and not 1 <= draft_vocab_size <= target.vocab_size:
        raise ValueError(f"draft_vocab_size must be in [1, {target.vocab_size}] or None, got {draft_vocab_size}")


def feature_bytes(data_path: str | Path, hidden: int, dtype: torch.dtype, limit: int | None = None) -> int:
    """Bytes the shards of a training Parquet will take: per stored token (after its row's few-shot context)
    the features in `dtype`, an int32 id and an int8 mask."""
    with reading(data_path, "training data"):
        table = pq.read_table(data_path, columns=[c for c in ("input_ids", "context")
                                                  if c in pq.read_schema(data_path).names])
    rows = table.slice(0, limit) if limit is not None else table
    lengths = [len(ids) for ids in rows.column("input_ids").to_pylist()]
    contexts = rows.column("context").to_pylist() if "context" in rows.column_names else [0] * len(lengths)
    tokens = sum(n - c for n, c in zip(lengths, contexts))
    return tokens * (hidden * torch.finfo(dtype).bits // 8 + 5)


def check_disk(directory: str | Path, need: int) -> None:
    """Refuse, before any work, to write `need` bytes where the disk has less free; name the knobs that shrink it."""
    free = shutil.disk_usage(directory).free
    if need > free:
        raise OSError(f"feature extraction needs ~{need / 1e9:.2f} GB and {directory} has {free / 1e9:.2f} GB free; "
                      "free space, or shrink the features: targets.<target>.feature_dtype: bfloat16 (half of "
                      "float32), fewer conversations in datasets, or targets.<target>.features: online (none on disk)")


def extract_features(
    target: TargetModel,
    data_path: str | Path,
    out_dir: str | Path,
    shard_tokens: int = 65536,
    dtype: torch.dtype = torch.bfloat16,
    draft_vocab_size: int | None = None,
    limit: int | None = None,
    progress: bool = True,
    vocab_tokens: str = "assistant",
    d2t: Tensor | None = None,
    batch_tokens: int = 4096,
) -> dict:
    """Extract features of the training Parquet at `data_path` into `out_dir` (module docstring).

    shard_tokens: tokens per shard (a longer sequence gets a shard of its own); dtype: how the
    features are stored; draft_vocab_size: N of the reduced vocabulary (None: the full one);
    limit: the first `limit` rows only; vocab_tokens: "assistant" counts the tokens with
    loss_mask 1, "all" every token; d2t: a vocabulary chosen beforehand (`write_vocab`, shared
    across datasets), which replaces the choice from this data's counts; batch_tokens: padded
    tokens per forward (rows x the longest after its context). Returns meta.json's content plus
    the wall time.
    """
    _check_settings(target, shard_tokens, dtype, draft_vocab_size, limit, vocab_tokens)
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
    require_data(data_path)
    out_dir = os.path.abspath(out_dir)
    _check_destination(out_dir)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    check_disk(os.path.dirname(out_dir), feature_bytes(data_path, target.hidden_size, dtype, limit))
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", suffix=".tmp", dir=os.path.dirname(out_dir))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the published directory should read like any other
    try:
        writer = ShardWriter(tmp, shard_tokens, dtype)
        done = _extract_into(target, data_path, writer, limit, vocab_tokens, progress, batch_tokens)
        counts, sources, seconds = done["counts"], done["sources"], done["seconds"]
        if not writer.names:
            raise ValueError(f"training data {data_path} has no rows")
        if d2t is None:
            d2t = choose_vocab(counts, draft_vocab_size)
        else:
            draft_vocab_size = None if len(d2t) == target.vocab_size and torch.equal(
                d2t, torch.arange(target.vocab_size)) else len(d2t)
        save_file({"d2t": d2t.contiguous(), "counts": counts}, os.path.join(tmp, VOCAB))
        meta = {
            "target": asdict(target.fingerprint()),
            "n_sequences": sum(n for n, _ in writer.sizes),
            "n_tokens": sum(t for _, t in writer.sizes),
            "shards": writer.names,
            "shard_sizes": writer.sizes,  # [sequences, tokens] per shard
            "hidden_size": target.hidden_size,
            "dtype": str(dtype).removeprefix("torch."),
            "draft_vocab_size": draft_vocab_size,
            "draft_vocab_coverage": counts[d2t].sum().item() / max(counts.sum().item(), 1),
            "vocab_tokens": vocab_tokens,
            "source_counts": dict(sorted(sources.items())),
            "sources": done["names"],  # per stored sequence: its source
            "orders": done["orders"],  # per stored sequence: its order in the source (mixtures select by it)
            "computed_tokens": done["computed_tokens"],  # target forward rows, few-shot context reuse counted once
            "shard_tokens": shard_tokens,
            "batch_tokens": batch_tokens,
            "limit": limit,
            "data_path": str(data_path),
        }
        with open(os.path.join(tmp, META), "w") as f:
            json.dump(meta, f, indent=2)
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**meta, "seconds": seconds, "tokens_per_second": meta["computed_tokens"] / seconds}
