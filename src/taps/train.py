"""Drafter training: EAGLE-2 feature regression, and HASS on top of it, from feature shards.

The training run: batches in the order of the plan (`taps.batching`), one optimizer step each on
the objective (`taps.objective`), validation after every epoch (`taps.validation`), resumable
checkpoints (`taps.checkpoint`); the settings are a `TrainConfig` (`taps.train_config`).
Gradients are clipped by value (as EAGLE and HASS). The lr warms up linearly, then decays
(cosine by default).

Precision. The drafter's parameters, gradients and AdamW state are fp32 whatever the target's
dtype (master weights): at lr 3e-5 most updates are below half a bf16 ulp of the weight they
change, so bf16 weights would round them away. Over a half-precision target (bf16 on a GPU) the
forward and the losses run under autocast to the target's dtype (`taps.objective.autocast`); the
frozen target stays in its dtype. `checkpoint_dtype` sets the dtype of the finished drafter's
weights; the resumable state and best/ keep fp32, so resume stays exact.

Resume. The split depends only on (seed, number of sequences), the data order only on
(seed, epoch) and the noise only on (seed, step); the weights, optimizer, RNG states and
validation rows travel in the saved state (`taps.checkpoint`, which also keeps the best epoch).
A run resumed from its last checkpoint ends with the same weights, validation rows and
selected drafter as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time

import pandas as pd
import pyarrow as pa
import torch
from tqdm import tqdm

from taps import parallel
from taps.batching import Features, collate, plan_batches, split_sequences
from taps.checkpoint import clear_other_run, load_state, prune_best, run_identity, save_final, save_state, select_best
from taps.data import write_parquet_atomic
from taps.drafter import Drafter, DrafterConfig
from taps.objective import SUMS, autocast, loss_sums, step_metrics
from taps.shards import FeatureSequence, FeatureShards
from taps.target import TargetModel
from taps.train_config import TrainConfig
from taps.validation import end_epoch


def learning_rate(step: int, total: int, config: TrainConfig) -> float:
    """Linear warmup to config.lr, then cosine or linear decay towards 0 at step `total`."""
    warmup = config.warmup_steps if config.warmup_steps is not None else total // 100
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if config.decay == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * (1 - progress)


def build_drafter(target: TargetModel, shards: Features, config: TrainConfig) -> Drafter:
    """A fresh (or warm-started) drafter whose draft vocabulary is the shards' d2t."""
    d2t = shards.d2t
    if config.draft_vocab_size is not None and config.draft_vocab_size != d2t.numel():
        raise ValueError(f"TrainConfig.draft_vocab_size is {config.draft_vocab_size} but the features' "
                         f"vocab.safetensors maps {d2t.numel()} draft ids")
    full = d2t.numel() == target.vocab_size and torch.equal(d2t, torch.arange(target.vocab_size))
    init = config.seed if config.init_seed is None else config.init_seed
    dconfig = DrafterConfig(backbone=config.backbone, draft_vocab_size=None if full else d2t.numel(), seed=init,
                            architecture=config.architecture)
    drafter = Drafter(target, dconfig, None if full else d2t, dtype=torch.float32)  # fp32 master weights
    if config.warm_start:
        start = Drafter.load(config.warm_start, target, dtype=torch.float32)
        if start.config.architecture != config.architecture:
            raise ValueError(f"warm_start {config.warm_start!r} has architecture {start.config.architecture!r}, "
                             f"this run {config.architecture!r}: set the same train.<backbone>.architecture for both")
        if not torch.equal(start.d2t.cpu(), drafter.d2t.cpu()):
            raise ValueError(f"warm_start {config.warm_start!r} has another draft vocabulary (d2t) than the features")
        drafter.load_state_dict(start.state_dict())
    return drafter


def train_drafter(target: TargetModel, features: str | os.PathLike | Features, out_dir: str,
                  config: TrainConfig = TrainConfig(), progress: bool = True,
                  max_steps: int | None = None, restart: bool = False) -> pd.DataFrame:
    """Train (or resume training) a drafter; returns the per-step metrics (also in metrics.parquet).

    features: a feature directory (checked against the target) or an object read like
    `FeatureShards`, used as is. The drafter trains in fp32 over a target of any dtype (module
    docstring, Precision). Stops early after `max_steps` optimizer steps in all (a checkpoint is saved
    there); a later call with the same settings and data resumes. A saved run of other settings is
    refused, or with `restart` discarded for a fresh run. Validation rows go to val_metrics.parquet; the finished
    drafter (the best epoch's weights; the last ones without validation) goes to out_dir/drafter
    with train_config.json (and selection.json) beside it.
    """
    is_path = isinstance(features, (str, os.PathLike))
    shards = FeatureShards(features, target.fingerprint()) if is_path else features  # refuses another target's
    torch.manual_seed(config.seed)
    plan = plan_batches(shards.lengths, config)
    _, val_ids = split_sequences(len(shards), config.val_fraction, config.seed)
    drafter = build_drafter(target, shards, config).train()
    optimizer = torch.optim.AdamW(drafter.parameters(), lr=config.lr, betas=config.betas,
                                  weight_decay=config.weight_decay)
    run = run_identity(config, shards, plan)
    if restart and parallel.is_main() and clear_other_run(out_dir, run):
        print(f"{out_dir!r} held a run with other settings: cleared, training afresh")
    parallel.barrier()  # the others read the state once the main process has cleared it
    done, val_rows = load_state(out_dir, drafter, optimizer, run)
    if done and parallel.is_main():
        print(f"resumed at step {done} of {len(plan)} from the state saved in {out_dir!r}")
    metrics_path = os.path.join(out_dir, "metrics.parquet")
    rows = pd.read_parquet(metrics_path).to_dict("records") if done and os.path.exists(metrics_path) else []
    rows = [r for r in rows if r["step"] < done]
    stop = len(plan) if max_steps is None else min(len(plan), max_steps)
    main = parallel.is_main()  # with several processes, the first validates and writes
    read = lambda step: shards.batch(parallel.local(plan[step][1]), config.max_length)  # noqa: E731
    with parallel.Prefetcher(read, range(done, stop)) as loader:  # reads step + 1 while step trains
        for step in tqdm(range(done, stop), initial=done, total=len(plan), disable=not (progress and main),
                         desc="train"):
            rows.append(train_step(drafter, optimizer, shards, plan, step, config, loader.get(step)))
            if main and val_ids and (step + 1 == len(plan) or plan[step + 1][0] != plan[step][0]):  # epoch end
                end_epoch(out_dir, drafter, shards, val_ids, val_rows, plan[step][0], step + 1, config)
            if main and ((step + 1) % config.save_every == 0 or step + 1 == stop):
                write_parquet_atomic(pa.Table.from_pylist(rows), metrics_path)
                save_state(out_dir, step + 1, drafter, optimizer, run, val_rows)
                prune_best(out_dir, select_best(val_rows, config.select_by))
    if main and stop == len(plan):
        save_final(out_dir, drafter, config, select_best(val_rows, config.select_by))
    parallel.barrier()
    return pd.DataFrame(rows)


def train_step(drafter: Drafter, optimizer: torch.optim.Optimizer, shards: Features,
               plan: list[tuple[int, list[int]]], step: int, config: TrainConfig,
               parts: list[FeatureSequence] | None = None) -> dict:
    """One optimizer step on batch `step` of the plan; returns its metrics row.

    In a data-parallel run this process trains on its share of the batch (`taps.parallel.local`;
    `parts`: those sequences, read ahead by the caller, else read here), its loss averaged over
    the global batch's counted rows; gradients and metrics are summed over the processes.
    """
    start = time.perf_counter()
    epoch, seqs = plan[step]
    mine = parallel.local(seqs)
    parts = shards.batch(mine, config.max_length) if parts is None else parts
    lr = learning_rate(step, len(plan), config)
    for group in optimizer.param_groups:
        group["lr"] = lr
    counted = sum(int(p.loss_mask[1:].sum()) for p in parts)
    rows = int(parallel.all_sum(torch.tensor([counted]))[0])
    optimizer.zero_grad(set_to_none=True)
    sums = dict.fromkeys(SUMS, 0.0)
    padded = 0
    if parts:  # a process may get no sequence of a short batch: it adds zero gradients
        batch = collate(parts, mine, drafter.d2t.device, drafter.fc.weight.dtype)
        with autocast(drafter):
            loss, sums = loss_sums(drafter, batch, config, step)
        (loss / max(rows, 1)).backward()
        padded = batch.tokens.numel()
    parallel.sync_grads(list(drafter.parameters()))
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_value_(drafter.parameters(), config.grad_clip)
    optimizer.step()
    totals = parallel.all_sum(torch.tensor([sums[k] for k in SUMS] + [sum(len(p.input_ids) - 1 for p in parts),
                                                                      padded], dtype=torch.float64)).tolist()
    return {"step": step, "epoch": epoch, "lr": lr, **step_metrics(dict(zip(SUMS, totals))),
            "tokens": int(totals[-2]), "padded_tokens": int(totals[-1]),
            "sequences": len(seqs), "seconds": time.perf_counter() - start}
