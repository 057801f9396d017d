"""Feature extraction: the target's last hidden state for every training token, in shards.

EAGLE drafters learn from the target's last hidden state (the lm_head's input). It is computed
once here, several sequences per forward (right-padded batches of at most `batch_tokens`
padded tokens), and streamed into sharded safetensors files: whole sequences are copied into a
buffer of `shard_tokens` rows allocated once, and the buffer is written out as a shard before it
would overflow, so host memory stays at one shard however large the data (a sequence never
straddles two shards; one longer than a shard is written alone). The reduced draft vocabulary is chosen here too, from
token frequencies counted in the same pass, and saved beside the features.

An output directory holds (written atomically: built in a hidden sibling, then renamed):

    shard-00000.safetensors   input_ids [T] int32, loss_mask [T] int8, hidden [T, H] (dtype),
    shard-00001.safetensors   offsets [n_seq + 1] int64: the shard's sequences concatenated,
    ...                       sequence i being rows offsets[i]:offsets[i + 1]
    vocab.safetensors         d2t [N] int64: draft id -> target id, the N most frequent tokens by
                              descending count (ties: lower id first); counts [V] int64
    meta.json                 target fingerprint, sizes, dtype, shards, vocabulary coverage

Frequencies are counted, by default, over the assistant tokens (loss_mask == 1): those are the
tokens the drafter is trained to predict and, at inference, proposes (EAGLE-3 counts the same).
`FeatureShards` reads the directory back for training, one shard in memory at a time.

Few-shot context. A row may start with `context` tokens of few-shot exemplars shared by the
source's rows (`taps.prompts`, `taps.answers`). They are run through the target once
(`ContextCache`: the next context reuses what it shares with the last one) and not stored: the
rows of one context run as a batch on top of its cache, and a stored sequence starts after it,
its features computed with it in view. meta.json keeps each stored
sequence's source and `order`; `FeatureMixture` builds a training mixture from per-source
directories by order (a mixture of c conversations of a source takes order < c), so sources are
extracted once and shared by every mixture.

Online features. At paper scale the features of one pass (~250M tokens x 4096 x bf16, ~2 TB)
do not fit on disk. `OnlineFeatures` reads the same training rows and mixtures from the data
Parquets instead and has the frozen target compute a batch's features when training asks for
them (`context_features`, as extraction does), with nothing written.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import pyarrow.parquet as pq
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from taps.generate import chain
from taps.intermediates import read_json, reading
from taps.target import Fingerprint, TargetModel

SHARD_NAME = "shard-{:05d}.safetensors"  # .format(shard index)
VOCAB, META = "vocab.safetensors", "meta.json"
SHARD_DTYPES = {"input_ids": torch.int32, "loss_mask": torch.int8, "offsets": torch.int64}  # hidden: meta dtype
FEATURE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
VOCAB_TOKENS = ("assistant", "all")  # which tokens the vocabulary frequencies count
DATA_COLUMNS = ("input_ids", "loss_mask", "source")
PRODUCER = "taps.features.extract_features (the workflow's feature-extraction step)"


# ---------------------------------------------------------------- reading the training data


class Row(NamedTuple):
    """One training row as `taps.data` / `taps.answers` write it."""

    input_ids: Tensor  # [n] int64
    loss_mask: Tensor  # [n] int8
    source: str
    order: int  # position in its source's seeded order (mixtures take order < count); else the row index
    context: int  # leading tokens of shared few-shot context: computed, not stored (0 if none)


def read_rows(data_path: str | Path, limit: int | None = None, batch_rows: int = 64) -> Iterator[Row]:
    """The rows of a training Parquet, reading `batch_rows` rows at a time."""
    with reading(data_path, "training data"):
        file = pq.ParquetFile(data_path)
    names = file.schema_arrow.names
    missing = [c for c in DATA_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"training data {data_path} lacks columns {missing}; it has {names}")
    extra = [c for c in ("order", "context") if c in names]
    row = 0
    for batch in file.iter_batches(batch_size=batch_rows, columns=list(DATA_COLUMNS) + extra):
        ids, masks, sources = (batch.column(c) for c in DATA_COLUMNS)
        more = {c: batch.column(c).to_pylist() for c in extra}
        for i in range(batch.num_rows):
            if limit is not None and row >= limit:
                return
            if not ids[i].is_valid or not masks[i].is_valid or len(ids[i]) == 0 or len(ids[i]) != len(masks[i]):
                raise ValueError(f"training data {data_path}, row {row}: input_ids and loss_mask must be "
                                 f"non-empty lists of the same length")
            context = more["context"][i] if "context" in more else 0
            if not 0 <= context < len(ids[i]):
                raise ValueError(f"training data {data_path}, row {row}: context {context} must be in "
                                 f"[0, {len(ids[i])})")
            yield Row(torch.from_numpy(ids[i].values.to_numpy().astype(np.int64)),  # astype: a writable copy
                      torch.from_numpy(masks[i].values.to_numpy().astype(np.int8)), str(sources[i].as_py()),
                      more["order"][i] if "order" in more else row, context)
            row += 1


def _require_data(path) -> None:
    with reading(path, "training data"):  # missing or truncated: refused before any work
        pq.ParquetFile(path)


def target_rows(target: TargetModel, data_path, limit: int | None = None) -> Iterator[Row]:
    """`read_rows`, refusing a row whose ids fall outside the target's vocabulary."""
    for index, row in enumerate(read_rows(data_path, limit)):
        if row.input_ids.min() < 0 or row.input_ids.max() >= target.vocab_size:
            raise ValueError(f"training data {data_path}, row {index}: token ids outside the target's "
                             f"vocabulary [0, {target.vocab_size}); was it tokenised for another target?")
        yield row


# ---------------------------------------------------------------- writing


class ShardWriter:
    """Whole sequences copied into a buffer of `shard_tokens` rows, written as a shard before it overflows.

    The hidden-state buffer [shard_tokens, H] is allocated once, on first use, and written out
    from a view: host memory holds one shard, never a second copy of it. A sequence longer than
    `shard_tokens` gets a shard of its own (written from its own tensor) rather than being split.
    """

    def __init__(self, directory: str, shard_tokens: int, dtype: torch.dtype):
        self.directory, self.shard_tokens, self.dtype = directory, shard_tokens, dtype
        self.names: list[str] = []  # shard files written so far
        self.sizes: list[list[int]] = []  # [sequences, tokens] of each written shard
        self.peak_tokens = 0  # the most tokens ever held at once
        self._ids: list[Tensor] = []
        self._masks: list[Tensor] = []
        self._buffer: Tensor | None = None  # [shard_tokens, H] in dtype
        self._tokens = 0

    def add(self, input_ids: Tensor, loss_mask: Tensor, hidden: Tensor) -> None:
        """input_ids, loss_mask: [n]; hidden: [n, H] on any device (stored on the CPU in `dtype`)."""
        n = len(input_ids)
        if self._tokens and self._tokens + n > self.shard_tokens:
            self.flush()
        self._ids.append(input_ids.to(torch.int32))
        self._masks.append(loss_mask.to(torch.int8))
        self.peak_tokens = max(self.peak_tokens, self._tokens + n)
        if n > self.shard_tokens:  # a shard of its own
            self._write(hidden.to("cpu", self.dtype), n)
            return
        if self._buffer is None:
            self._buffer = torch.empty(self.shard_tokens, hidden.shape[-1], dtype=self.dtype)
        self._buffer[self._tokens:self._tokens + n] = hidden.to("cpu", self.dtype)
        self._tokens += n

    def flush(self) -> None:
        """Write the buffered sequences as the next shard and empty the buffer."""
        if self._ids:
            self._write(self._buffer[:self._tokens], self._tokens)

    def _write(self, hidden: Tensor, tokens: int) -> None:
        lengths = torch.tensor([len(ids) for ids in self._ids], dtype=torch.int64)
        tensors = {
            "input_ids": torch.cat(self._ids),  # [T]
            "loss_mask": torch.cat(self._masks),  # [T]
            "hidden": hidden,  # [T, H]: a view of the buffer's first T rows (contiguous)
            "offsets": torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]),  # [n_seq + 1]
        }
        name = SHARD_NAME.format(len(self.names))
        save_file(tensors, os.path.join(self.directory, name))
        self.names.append(name)
        self.sizes.append([len(self._ids), tokens])
        self._ids, self._masks, self._tokens = [], [], 0


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


def choose_vocab(counts: Tensor, size: int | None) -> Tensor:
    """d2t [N]: the `size` ids of highest count (counts [V]), by descending count, ties to the lower id.

    size None keeps the whole vocabulary in id order: d2t = arange(V).
    """
    if size is None:
        return torch.arange(len(counts))
    return torch.sort(counts, descending=True, stable=True).indices[:size]  # stable: equal counts keep id order


def count_tokens(data_paths: list[str], vocab_size: int, vocab_tokens: str = "assistant") -> Tensor:
    """Token frequencies [V] over several training Parquet files (for one vocabulary shared by all)."""
    counts = torch.zeros(vocab_size, dtype=torch.int64)
    for path in data_paths:
        for ids, mask, *_ in read_rows(path):
            counted = ids if vocab_tokens == "all" else ids[mask == 1]
            counts.index_add_(0, counted, torch.ones_like(counted))
    return counts


def write_vocab(data_paths: list[str], vocab_size: int, size: int | None, out_path: str,
                vocab_tokens: str = "assistant") -> Tensor:
    """Choose the draft vocabulary over all `data_paths` and save it (d2t, counts) atomically.

    Drafters of one target must share their vocabulary to be averaged or compared node for
    node, so the workflow picks it once per target over the union of its training mixtures.
    """
    counts = count_tokens(data_paths, vocab_size, vocab_tokens)
    d2t = choose_vocab(counts, size)
    tmp = f"{out_path}.tmp"
    save_file({"d2t": d2t.contiguous(), "counts": counts}, tmp)
    os.replace(tmp, out_path)
    return d2t


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
    _require_data(data_path)
    out_dir = os.path.abspath(out_dir)
    _check_destination(out_dir)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
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


# ---------------------------------------------------------------- reading back


class FeatureSequence(NamedTuple):
    """One training sequence with its features."""

    input_ids: Tensor  # [n] int64
    loss_mask: Tensor  # [n] bool: True where predicting the token is trained (an assistant token)
    hidden: Tensor  # [n, H] float32: the target's last hidden state after each token


def _missing(path: str, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} {path} does not exist; it is written by {PRODUCER}")


def read_meta(out_dir: str | Path) -> dict:
    """meta.json of a feature directory."""
    path = os.path.join(out_dir, META)
    if not os.path.isdir(out_dir):
        raise _missing(str(out_dir), "feature directory")
    meta = read_json(path, "feature metadata", out_dir)
    try:
        Fingerprint(**meta["target"])
        if len(meta["shards"]) != len(meta["shard_sizes"]) or meta["dtype"] not in FEATURE_DTYPES:
            raise ValueError("shards, shard_sizes or dtype are inconsistent")
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"feature metadata {path} is corrupt: {err}") from err
    return meta


def load_vocab(out_dir: str | Path) -> Tensor:
    """d2t [N] int64 (draft id -> target id) of a feature directory, or of a vocabulary file itself."""
    own = str(out_dir).endswith(".safetensors")  # a vocabulary file (rule draft_vocab), not a feature directory's
    path = str(out_dir) if own else os.path.join(out_dir, VOCAB)
    with reading(path, "draft vocabulary" if own else "feature vocabulary", None if own else out_dir):
        tensors = load_file(path)
    if "d2t" not in tensors:
        raise ValueError(f"draft vocabulary {path} is corrupt: it holds no d2t")
    return tensors["d2t"].long()


def _check_shard(tensors: dict[str, Tensor], sizes: list[int], hidden_size: int) -> str | None:
    """What is wrong with a loaded shard against its expected [sequences, tokens], or None."""
    if sorted(tensors) != sorted([*SHARD_DTYPES, "hidden"]):
        return f"tensors {sorted(tensors)}, expected {sorted([*SHARD_DTYPES, 'hidden'])}"
    wrong = [k for k, dt in SHARD_DTYPES.items() if tensors[k].dtype != dt or tensors[k].ndim != 1]
    if wrong:
        return f"tensors {wrong} have the wrong dtype or rank"
    offsets, (n_seq, n_tok) = tensors["offsets"], sizes
    if len(offsets) != n_seq + 1 or offsets[0] != 0 or offsets[-1] != n_tok or (offsets.diff() <= 0).any():
        return f"offsets do not describe {n_seq} sequences of {n_tok} tokens in all"
    if len(tensors["input_ids"]) != n_tok or len(tensors["loss_mask"]) != n_tok:
        return f"input_ids or loss_mask do not hold {n_tok} tokens"
    if tensors["hidden"].shape != (n_tok, hidden_size):
        return f"hidden has shape {tuple(tensors['hidden'].shape)}, expected {(n_tok, hidden_size)}"
    return None


class _Batches:
    """`batch`: several sequences at once, for the readers that read them one at a time."""

    def batch(self, ids, max_length: int | None = None) -> list[FeatureSequence]:
        """Sequences `ids`, each cut to its first max_length tokens (see `sequence`)."""
        return [self.sequence(i, max_length) for i in ids]


class FeatureShards(_Batches):
    """A feature directory read back shard by shard (`sequences`) or one sequence at a time (`sequence`).

    With `fingerprint`, features extracted from another target are refused. Random access reads
    only the slices of one sequence, so training can shuffle all sequences every epoch.
    """

    def __init__(self, out_dir: str | Path, fingerprint: Fingerprint | None = None):
        self.directory = str(out_dir)
        self.meta = read_meta(out_dir)
        saved = Fingerprint(**self.meta["target"])
        diff = [] if fingerprint is None else saved.mismatches(fingerprint)
        if diff:
            raise ValueError(f"features in {self.directory} were extracted from target {saved.name!r}, not "
                             f"{fingerprint.name!r}: " + "; ".join(diff))
        self.spans: list[tuple[int, int, int]] = []  # per sequence: (shard, start, end) token offsets
        for index, name in enumerate(self.meta["shards"]):
            path = os.path.join(self.directory, name)
            with reading(path, "feature shard", self.directory), safe_open(path, "pt") as shard:
                offsets = shard.get_tensor("offsets").tolist()
            self.spans += [(index, a, b) for a, b in zip(offsets[:-1], offsets[1:])]
        if len(self.spans) != len(self):
            raise ValueError(f"feature directory {self.directory}: shards hold {len(self.spans)} sequences, "
                             f"meta.json says {len(self)}")

    @property
    def lengths(self) -> list[int]:
        """Tokens of every sequence, in storage order."""
        return [end - start for _, start, end in self.spans]

    @property
    def d2t(self) -> Tensor:
        return load_vocab(self.directory)

    def sequence(self, i: int, max_length: int | None = None) -> FeatureSequence:
        """Sequence i (storage order), cut to its first max_length tokens; hidden keeps the stored dtype."""
        index, start, end = self.spans[i]
        end = end if max_length is None else min(end, start + max_length)
        with safe_open(os.path.join(self.directory, self.meta["shards"][index]), "pt") as shard:
            return FeatureSequence(shard.get_slice("input_ids")[start:end].long(),
                                   shard.get_slice("loss_mask")[start:end].bool(), shard.get_slice("hidden")[start:end])

    def __len__(self) -> int:
        return self.meta["n_sequences"]

    @property
    def n_tokens(self) -> int:
        return self.meta["n_tokens"]

    @property
    def hidden_size(self) -> int:
        return self.meta["hidden_size"]

    def load_shard(self, index: int) -> dict[str, Tensor]:
        """The tensors of shard `index` (format: module docstring), checked against meta.json."""
        path = os.path.join(self.directory, self.meta["shards"][index])
        with reading(path, "feature shard", self.directory):
            tensors = load_file(path)
        problem = _check_shard(tensors, self.meta["shard_sizes"][index], self.hidden_size)
        if problem is None and tensors["hidden"].dtype != FEATURE_DTYPES[self.meta["dtype"]]:
            problem = f"hidden is {tensors['hidden'].dtype}, meta.json says {self.meta['dtype']}"
        if problem:
            raise ValueError(f"feature shard {path} is corrupt: {problem}")
        return tensors

    def sequences(self, shuffle: bool = False, seed: int = 0) -> Iterator[FeatureSequence]:
        """Every sequence once; with `shuffle`, shard order and order within each shard follow `seed`.

        Only one shard is in memory at a time; features become float32 one sequence at a time.
        """
        rng = random.Random(seed)
        shards = list(range(len(self.meta["shards"])))
        if shuffle:
            rng.shuffle(shards)
        for index in shards:
            tensors = self.load_shard(index)
            offsets = tensors["offsets"].tolist()
            order = list(range(len(offsets) - 1))
            if shuffle:
                rng.shuffle(order)
            for i in order:
                rows = slice(offsets[i], offsets[i + 1])
                yield FeatureSequence(tensors["input_ids"][rows].long(), tensors["loss_mask"][rows].bool(),
                                      tensors["hidden"][rows].float())

    def __iter__(self) -> Iterator[FeatureSequence]:
        return self.sequences()


class FeatureMixture(_Batches):
    """A training mixture read from per-source feature directories, with FeatureShards' interface.

    `parts` lists (feature directory, count): the sequences of that directory whose `order` in
    their source is below count (count None: all). Sources are extracted once and shared by
    every mixture that uses them; all parts must hold features of the same target and share one
    draft vocabulary.
    """

    def __init__(self, parts: list[tuple[str | Path, int | None]], fingerprint: Fingerprint | None = None):
        if not parts:
            raise ValueError("a feature mixture needs at least one feature directory")
        self.parts = [FeatureShards(directory, fingerprint) for directory, _ in parts]
        d2t = self.parts[0].d2t
        for shards in self.parts[1:]:
            if not torch.equal(shards.d2t, d2t):
                raise ValueError(f"feature directories {self.parts[0].directory} and {shards.directory} have "
                                 "different draft vocabularies; extract them with one vocabulary per target")
        self.index: list[tuple[int, int]] = []  # mixture sequence -> (part, sequence in part)
        for p, (shards, (directory, count)) in enumerate(zip(self.parts, parts)):
            orders = shards.meta.get("orders") or list(range(len(shards)))
            chosen = [i for i, order in enumerate(orders) if count is None or order < count]
            if count is not None and max(orders, default=-1) + 1 < count:
                raise ValueError(f"{directory} holds the first {max(orders, default=-1) + 1} conversations of its "
                                 f"source, fewer than the {count} asked for; extract more")
            self.index += [(p, i) for i in chosen]
        lengths = [shards.lengths for shards in self.parts]
        self._lengths = [lengths[p][i] for p, i in self.index]
        self.directory = ",".join(str(d) for d, _ in parts)
        self.meta = {**self.parts[0].meta, "n_sequences": len(self.index), "n_tokens": sum(self._lengths),
                     "parts": [[str(d), c] for d, c in parts]}

    @property
    def lengths(self) -> list[int]:
        """Tokens of every sequence of the mixture."""
        return list(self._lengths)

    @property
    def d2t(self) -> Tensor:
        return self.parts[0].d2t

    @property
    def hidden_size(self) -> int:
        return self.parts[0].hidden_size

    @property
    def n_tokens(self) -> int:
        return self.meta["n_tokens"]

    def __len__(self) -> int:
        return len(self.index)

    def sequence(self, i: int, max_length: int | None = None) -> FeatureSequence:
        p, j = self.index[i]
        return self.parts[p].sequence(j, max_length)


class OnlineFeatures:
    """Training sequences whose features the frozen target computes when training asks for them.

    `parts` lists (training Parquet, count) and selects like `FeatureMixture`: the rows whose
    `order` in their source is below count (None: all). Only token ids are held; `batch` runs
    the target over the requested rows (`context_features`: rows sharing a few-shot context in
    one padded forward on top of it, under no_grad) and returns what `FeatureShards` would have
    stored, in the target's dtype. `d2t` is the draft vocabulary (the workflow's vocab file).
    Calls are serialised by a lock: the prefetching thread and validation may both read.
    """

    def __init__(self, target: TargetModel, parts: list[tuple[str | Path, int | None]], d2t: Tensor):
        if not parts:
            raise ValueError("online features need at least one training Parquet")
        self.target, self._d2t = target, d2t.long()
        self.rows: list[Row] = []
        for path, count in parts:
            _require_data(path)
            rows = list(target_rows(target, path))
            orders = [r.order for r in rows]
            if count is not None and max(orders, default=-1) + 1 < count:
                raise ValueError(f"{path} holds the first {max(orders, default=-1) + 1} conversations of its source, "
                                 f"fewer than the {count} asked for")
            self.rows += [r for r in rows if count is None or r.order < count]
        if self._d2t.min() < 0 or self._d2t.max() >= target.vocab_size:
            raise ValueError(f"the draft vocabulary holds ids outside the target vocabulary [0, {target.vocab_size})")
        self._lengths = [len(r.input_ids) - r.context for r in self.rows]
        self.directory = ",".join(str(p) for p, _ in parts)
        self.meta = {"features": "online", "target": asdict(target.fingerprint()), "n_sequences": len(self.rows),
                     "n_tokens": sum(self._lengths), "hidden_size": target.hidden_size,
                     "parts": [[str(p), c] for p, c in parts]}
        self._contexts = ContextCache(target)
        self._lock = threading.Lock()

    @property
    def lengths(self) -> list[int]:
        """Tokens of every sequence after its few-shot context (what training reads)."""
        return list(self._lengths)

    @property
    def d2t(self) -> Tensor:
        return self._d2t

    @property
    def hidden_size(self) -> int:
        return self.target.hidden_size

    @property
    def n_tokens(self) -> int:
        return self.meta["n_tokens"]

    def __len__(self) -> int:
        return len(self.rows)

    def sequence(self, i: int, max_length: int | None = None) -> FeatureSequence:
        return self.batch([i], max_length)[0]

    def batch(self, ids, max_length: int | None = None) -> list[FeatureSequence]:
        """Sequences `ids` with their features, each cut to its first max_length tokens after the context."""
        rows = [self.rows[i] for i in ids]
        cut = [r.input_ids[:r.context + max_length] if max_length is not None else r.input_ids for r in rows]
        with self._lock:
            hidden = context_features(self.target, [(c, r.context) for c, r in zip(cut, rows)], self._contexts)
        return [FeatureSequence(c[r.context:], r.loss_mask[r.context:len(c)].bool(), h)
                for c, r, h in zip(cut, rows, hidden)]
