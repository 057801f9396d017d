"""Batches: training sequences as padded batches, and the plan of every optimizer step's batch.

Data. A sequence x_0..x_{n-1} comes with the target's features f_0..f_{n-1} (last hidden
state, the lm_head's input). The drafter sees n - 1 rows: row i is (f_i + noise, x_{i+1}) at
position i, exactly the entry the decoder feeds it (see `taps.draft`), and its output ĥ_i
regresses f_{i+1}. Row i counts in the loss when loss_mask[i+1] == 1, i.e. when its input
token x_{i+1} is a reply token: at decode time the drafter proposes only from entries whose
token was generated (the first reply token comes from the target's prefill, so the first
drafted token is the second one, proposed by the row of the first), and the row of a reply's
last token is kept as the reference keeps it. A batch is B sequences right-padded to L rows
(B x L <= batch_tokens), all sharing one [L, L] mask.

Plan. A seeded val_fraction of the sequences is held out for validation (`split_sequences`);
the rest are shuffled every epoch and cut into batches of similar lengths (`plan_batches`).
The split depends only on (seed, number of sequences) and the data order only on
(seed, epoch), so a resumed run (`taps.train`) reads the same batches.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from taps.shards import FeatureSequence
from taps.train_config import TrainConfig

BUCKET = 256  # sequences sorted by length together when forming batches (less padding)


class Features(Protocol):
    """What training reads: `FeatureShards`, or anything presenting sequences the same way."""

    meta: dict
    lengths: list[int]  # tokens of every sequence
    d2t: Tensor  # [N] draft id -> target id
    hidden_size: int

    def sequence(self, i: int, max_length: int | None = None) -> FeatureSequence: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Batch:
    """B sequences right-padded to L rows; row i is (f_i, x_{i+1}) at position i.

    Padding rows come after a sequence's real rows and every mask looks only backwards, so
    they never reach a real row; they are never counted.
    """

    tokens: Tensor  # [B, L] x_{i+1} (0 on padding)
    features: Tensor  # [B, L, H] f_i (0 on padding)
    targets: Tensor  # [B, L, H] f_{i+1}
    counted: Tensor  # [B, L] bool: loss_mask[i+1] (False on padding)
    lengths: tuple[int, ...]  # real rows (n - 1) of each sequence
    ids: tuple[int, ...] = ()  # each sequence's index in the features (seeds its noise); () : 0..B-1

    @property
    def positions(self) -> Tensor:
        """[B, L] position ids: i for row i."""
        return torch.arange(self.tokens.shape[1], device=self.tokens.device).expand_as(self.tokens)


def make_batch(shards: Features, seqs: Sequence[int], max_length: int, device, dtype) -> Batch:
    """Sequences `seqs` as one padded batch on `device`, features cast to `dtype`."""
    return collate(shards.batch(seqs, max_length), seqs, device, dtype)


def collate(parts: list[FeatureSequence], seqs: Sequence[int], device, dtype) -> Batch:
    """Sequences `parts` (of ids `seqs`, read by `Features.batch`) as one padded batch on `device`."""
    rows = max(len(ids) for ids, _, _ in parts) - 1

    def stack(xs: list[Tensor]) -> Tensor:  # pad each [n, ...] to [rows, ...] along dim 0, then stack
        return torch.stack([F.pad(x, (0, 0) * (x.ndim - 1) + (0, rows - len(x))) for x in xs]).to(device)

    return Batch(
        tokens=stack([ids[1:] for ids, _, _ in parts]),
        features=stack([h[:-1].to(dtype) for _, _, h in parts]),
        targets=stack([h[1:].to(dtype) for _, _, h in parts]),
        counted=stack([mask[1:] for _, mask, _ in parts]),
        lengths=tuple(len(ids) - 1 for ids, _, _ in parts),
        ids=tuple(seqs),
    )


def derived_seed(*keys: int) -> int:
    """A 63-bit seed that depends only on the keys (e.g. (seed, epoch) or (seed, step))."""
    return int.from_bytes(hashlib.sha256(repr(keys).encode()).digest()[:8], "little") >> 1


def split_sequences(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training ids, validation ids) of n sequences: sorted, disjoint, from (n, fraction, seed) alone.

    round(n * fraction) sequences are held out, at least 1 and at most n - 1; none when
    fraction is 0 or n < 2. Which ones: the head of a seeded permutation.
    """
    if fraction <= 0 or n < 2:
        return list(range(n)), []
    held = min(n - 1, max(1, round(n * fraction)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(seed, -2, n))).tolist()
    return sorted(order[held:]), sorted(order[:held])


def plan_batches(lengths: Sequence[int], config: TrainConfig) -> list[tuple[int, list[int]]]:
    """Every optimizer step's (epoch, sequence ids) over the training sequences, from (seed, epoch) alone.

    The training sequences are those `split_sequences` does not hold out. Each epoch shuffles
    them; windows of BUCKET of them are sorted by length (less padding) and cut into batches of
    at most batch_tokens padded rows (count x longest, a longer sequence goes alone); then the
    epoch's batches are shuffled.
    """
    rows = [min(n, config.max_length) - 1 for n in lengths]
    train, _ = split_sequences(len(rows), config.val_fraction, config.seed)
    plan = []
    for epoch in range(config.epochs):
        rng = torch.Generator().manual_seed(derived_seed(config.seed, epoch))
        order = [train[j] for j in torch.randperm(len(train), generator=rng).tolist() if rows[train[j]] >= 1]
        batches = [b for w in range(0, len(order), BUCKET) for b in cut_batches(order[w:w + BUCKET], rows, config)]
        plan += [(epoch, batches[j]) for j in torch.randperm(len(batches), generator=rng).tolist()]
    return plan


def cut_batches(window: list[int], rows: list[int], config: TrainConfig) -> list[list[int]]:
    """Sort a window of sequence ids by length, longest first; cut it into batches within budget."""
    batches: list[list[int]] = []
    for i in sorted(window, key=lambda i: rows[i], reverse=True):
        if not batches or (len(batches[-1]) + 1) * rows[batches[-1][0]] > config.batch_tokens:
            batches.append([])
        batches[-1].append(i)
    return batches
