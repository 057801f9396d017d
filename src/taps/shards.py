"""Feature directories: the on-disk format of extracted features, written shard by shard and read back.

A feature directory holds (written atomically by `taps.features.extract_features`: built in a
hidden sibling, then renamed):

    shard-00000.safetensors   input_ids [T] int32, loss_mask [T] int8, hidden [T, H] (dtype),
    shard-00001.safetensors   offsets [n_seq + 1] int64: the shard's sequences concatenated,
    ...                       sequence i being rows offsets[i]:offsets[i + 1]
    vocab.safetensors         d2t [N] int64: draft id -> target id, the N most frequent tokens by
                              descending count (ties: lower id first); counts [V] int64 (`taps.vocab`)
    meta.json                 target fingerprint, sizes, dtype, shards, vocabulary coverage

`ShardWriter` copies whole sequences into a buffer of `shard_tokens` rows allocated once and
writes the buffer out as a shard before it would overflow, so host memory stays at one shard
however large the data (a sequence never straddles two shards; one longer than a shard is
written alone). `FeatureShards` reads the directory back for training, one shard in memory at a
time.

Mixtures. meta.json keeps each stored sequence's source and `order`; `FeatureMixture` builds a
training mixture from per-source directories by order (a mixture of c conversations of a source
takes order < c), so sources are extracted once and shared by every mixture.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from taps.intermediates import read_json, reading
from taps.target import Fingerprint
from taps.vocab import load_vocab

SHARD_NAME = "shard-{:05d}.safetensors"  # .format(shard index)
META = "meta.json"
SHARD_DTYPES = {"input_ids": torch.int32, "loss_mask": torch.int8, "offsets": torch.int64}  # hidden: meta dtype
FEATURE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
PRODUCER = "taps.features.extract_features (the workflow's feature-extraction step)"


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
