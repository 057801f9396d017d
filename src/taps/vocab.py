"""The draft vocabulary: the N target tokens of highest frequency, chosen once per target and saved.

A vocabulary file (vocab.safetensors: in a feature directory, or on its own from the workflow's
draft_vocab step) holds

    d2t [N] int64     draft id -> target id, the N most frequent tokens by descending count
                      (ties: lower id first)
    counts [V] int64  the token frequencies it was chosen from

Frequencies are counted, by default, over the assistant tokens (loss_mask == 1): those are the
tokens the drafter is trained to predict and, at inference, proposes (EAGLE-3 counts the same).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from taps.intermediates import reading
from taps.rows import read_rows

VOCAB = "vocab.safetensors"  # a feature directory's vocabulary file
VOCAB_TOKENS = ("assistant", "all")  # which tokens the vocabulary frequencies count


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


def load_vocab(out_dir: str | Path) -> Tensor:
    """d2t [N] int64 (draft id -> target id) of a feature directory, or of a vocabulary file itself."""
    own = str(out_dir).endswith(".safetensors")  # a vocabulary file (rule draft_vocab), not a feature directory's
    path = str(out_dir) if own else os.path.join(out_dir, VOCAB)
    with reading(path, "draft vocabulary" if own else "feature vocabulary", None if own else out_dir):
        tensors = load_file(path)
    if "d2t" not in tensors:
        raise ValueError(f"draft vocabulary {path} is corrupt: it holds no d2t")
    return tensors["d2t"].long()
