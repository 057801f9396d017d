"""Validation: held-out sequences after every epoch, an acceptance proxy, and the epoch kept.

A seeded val_fraction of the sequences (whole conversations, `taps.batching.split_sequences`) is
held out. After every epoch they run without noise or gradients and val_metrics.parquet gets a
row: the loss terms as in training, and top-1 / top-3 agreement with the target's argmax at
unroll steps 1..3 (3 HASS steps whatever the backbone; step 1 is the ordinary forward). At step
j, row r predicts f_{r+1} from the drafter's own predictions of its last j - 1 features but the
true tokens, so top1_step{j} estimates acceptance at depth j given that the j - 1 tokens drafted
before it were right: a cheap proxy for acceptance length. The best epoch's weights (by
select_by) are kept in best/epoch-XXXX and become drafter/ at the end.
"""

from __future__ import annotations

import os
from typing import Sequence

import pyarrow as pa
import torch

from taps.batching import Batch, Features, cut_batches, make_batch
from taps.checkpoint import save_best, select_best
from taps.data import write_parquet_atomic
from taps.drafter import Drafter
from taps.objective import autocast, step_terms, unrolled_forward, weighted_loss
from taps.train_config import VAL_STEPS, TrainConfig


def validation_sums(drafter: Drafter, batch: Batch, config: TrainConfig) -> dict[str, float]:
    """One batch's sums over counted rows: the loss terms of steps 1..config.steps (as in training,
    without noise) and the agreements of steps 1..VAL_STEPS."""
    p_logits = drafter.logits(batch.targets[batch.counted])  # [R, V_d]
    preds = unrolled_forward(drafter, batch, batch.features, max(config.steps, VAL_STEPS))
    terms = [step_terms(drafter, pred, batch, p_logits, config.hass_topk) for pred in preds]
    trained = terms[:config.steps]
    sums = {"loss": weighted_loss(trained, config).item(),
            **{f"{k}_loss": sum(t[k].item() for t in trained) for k in ("feature", "ce", "topk")}}
    for j, t in enumerate(terms[:VAL_STEPS], start=1):
        sums |= {f"top1_step{j}": t["agree"].item(), f"top3_step{j}": t["agree3"].item()}
    return sums | {"counted": int(batch.counted.sum())}


@torch.no_grad()
def validate(drafter: Drafter, shards: Features, val_ids: Sequence[int], config: TrainConfig) -> dict[str, float]:
    """Validation metrics: loss terms and agreements averaged over the counted rows of `val_ids`.

    Batched as in training (longest first, within batch_tokens), in eval mode, without noise.
    """
    rows = [min(n, config.max_length) - 1 for n in shards.lengths]
    sums: dict[str, float] = {}
    drafter.eval()
    try:
        for seqs in cut_batches([i for i in val_ids if rows[i] >= 1], rows, config):
            batch = make_batch(shards, seqs, config.max_length, drafter.d2t.device, drafter.fc.weight.dtype)
            with autocast(drafter):
                batch_sums = validation_sums(drafter, batch, config)
            for key, value in batch_sums.items():
                sums[key] = sums.get(key, 0) + value
    finally:
        drafter.train()
    counted = int(sums.pop("counted", 0))
    return {**{k: v / max(counted, 1) for k, v in sums.items()}, "counted": counted, "sequences": len(val_ids)}


def end_epoch(out_dir: str, drafter: Drafter, shards: Features, val_ids: Sequence[int], val_rows: list[dict],
              epoch: int, steps_done: int, config: TrainConfig) -> None:
    """Validate after `epoch`: append its row to val_rows and val_metrics.parquet; keep the weights if best."""
    row = {"epoch": epoch, "step": steps_done, **validate(drafter, shards, val_ids, config)}
    val_rows.append(row)
    write_parquet_atomic(pa.Table.from_pylist(val_rows), os.path.join(out_dir, "val_metrics.parquet"))
    if select_best(val_rows, config.select_by) is row:
        save_best(out_dir, drafter, row, config.select_by)


def line_losses(points: dict[float, str], val_sets: dict[str, tuple[Features, Sequence[int]]], target,
                config: TrainConfig, cache: dict | None = None) -> dict[float, float]:
    """Validation loss of every point of an interpolation line (alpha -> drafter directory): the mean, over
    `val_sets` (name -> features and held-out ids: the line's ends' data, each once), of `validate`'s loss.
    `cache` ((directory, set name) -> loss), shared by the lines of one run, scores a drafter on a set once."""
    cache = {} if cache is None else cache
    out = {}
    for alpha, directory in points.items():
        missing = [name for name in val_sets if (directory, name) not in cache]
        if missing:
            drafter = Drafter.load(directory, target, dtype=torch.float32)
            for name in missing:
                cache[directory, name] = validate(drafter, *val_sets[name], config)["loss"]
        out[alpha] = sum(cache[directory, name] for name in val_sets) / len(val_sets)
    return out
