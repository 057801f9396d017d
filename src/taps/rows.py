"""Training rows: a training Parquet, as `taps.data` / `taps.answers` write it, read back row by row.

Every row holds its token ids, loss mask and source; optionally its `order` in the source's
seeded order (mixtures of c conversations take order < c) and its leading `context` tokens of
few-shot exemplars shared by the source's rows (computed by the target, never stored). Rows are
read a batch at a time and checked as they come: extraction (`taps.features`), the vocabulary
counts (`taps.vocab`) and online features (`taps.online`) all read them here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import Tensor

from taps.intermediates import reading
from taps.target import TargetModel

DATA_COLUMNS = ("input_ids", "loss_mask", "source")


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


def require_data(path) -> None:
    """Refuse a missing or truncated training Parquet."""
    with reading(path, "training data"):  # missing or truncated: refused before any work
        pq.ParquetFile(path)


def target_rows(target: TargetModel, data_path, limit: int | None = None) -> Iterator[Row]:
    """`read_rows`, refusing a row whose ids fall outside the target's vocabulary."""
    for index, row in enumerate(read_rows(data_path, limit)):
        if row.input_ids.min() < 0 or row.input_ids.max() >= target.vocab_size:
            raise ValueError(f"training data {data_path}, row {index}: token ids outside the target's "
                             f"vocabulary [0, {target.vocab_size}); was it tokenised for another target?")
        yield row
