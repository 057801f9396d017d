"""Online features: training sequences whose features the frozen target computes per batch.

At paper scale the features of one pass (~250M tokens x 4096 x bf16, ~2 TB) do not fit on
disk. `OnlineFeatures` reads the same training rows and mixtures from the data Parquets
instead and has the frozen target compute a batch's features when training asks for them
(`context_features`, as extraction does), with nothing written.
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path

from torch import Tensor

from taps.features import ContextCache, context_features
from taps.rows import Row, require_data, target_rows
from taps.shards import FeatureSequence
from taps.target import TargetModel


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
            require_data(path)
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
