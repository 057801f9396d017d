"""Drafter training: EAGLE-2 feature regression, and HASS on top of it, from feature shards.

Data. A sequence x_0..x_{n-1} comes with the target's features f_0..f_{n-1} (last hidden
state, the lm_head's input). The drafter sees n - 1 rows: row i is (f_i + noise, x_{i+1}) at
position i, exactly the entry the decoder feeds it (see `taps.draft`), and its output ĥ_i
regresses f_{i+1}. Row i counts in the loss when loss_mask[i+1] == 1, i.e. when its input
token x_{i+1} is a reply token: at decode time the drafter proposes only from entries whose
token was generated (the first reply token comes from the target's prefill, so the first
drafted token is the second one, proposed by the row of the first), and the row of a reply's
last token is kept as the reference keeps it. A batch is B sequences right-padded to L rows
(B x L <= batch_tokens), all sharing one [L, L] mask.

EAGLE-2 loss, per counted row, averaged over counted rows:
    feature_weight * SmoothL1(ĥ_i, f_{i+1})  (mean over H)  +  ce_weight * -Σ_v p_v log q_v
with p = softmax(head(f_{i+1})), q = softmax(head(ĥ_i)) over the draft vocabulary: with a
reduced vocabulary both use only the d2t rows of the head, so p is the target's distribution
restricted to d2t and renormalised.

HASS adds (a) the top-K distillation term -Σ_{k ∈ top-K(p)} p_k log q_k and (b) harmonized
context alignment over S = hass_steps unrolled steps. Step 1 is the EAGLE-2 forward. At step
j > 1 row r's input feature is the drafter's step j-1 prediction for f_r (its output at row
r - 1; row 0 keeps f_0). Keys come in blocks: block 0 holds the rows with target features,
block b >= 1 the rows whose inputs are step b's predictions. Row r of step j attends to the
block-0 keys of positions <= r - j + 1 and to one key in each block b = 1..j-1, at position
r - j + 1 + b (in block j-1: itself): exactly what it sees at decode time after drafting
j - 1 tokens past position r - j + 1. `alignment_mask` draws it (n = 4, step 3):

    row 0:  0 0 0 0 | 0 0 0 0 | 1 0 0 0
    row 1:  0 0 0 0 | 1 0 0 0 | 0 1 0 0
    row 2:  1 0 0 0 | 0 1 0 0 | 0 0 1 0
    row 3:  1 1 0 0 | 0 0 1 0 | 0 0 0 1

The step-b inputs are detached, as in the reference (HArmonizedSS/HASS, train/main_hass.py),
whose per-step losses are summed. Here steps 1..S-1 run without gradients (with a KV cache,
one forward per step) only to produce those inputs; then ONE forward over the concatenation of
all S blocks, with `unrolled_mask` (block row b holds alignment_mask(b + 1)), yields every
step's prediction with its gradient, and the S step losses are summed: the same gradient as
the reference's S backward passes. (The reference multiplies attention scores by its masks
rather than adding -inf, so masked keys keep a share of the softmax denominator; we mask them.)

Noise. The reference (EAGLE's `AddUniformNoise`, with its train config's std = 0.2) adds
(rand - 0.5) * std * 512 / L to a sequence's features, L being its token count after the cut to
max_len (the tensor is [1, L, H] before the collator pads it): uniform in [-w, w] with
w = 0.1 * 512 / L, more noise on short sequences (w = 1 at L = 51), less on long ones. With
noise_scale "length" (the default) we do the same: half-width noise * 512 / n for a sequence of
n tokens after the max_length cut (its real length, not the batch's padded one; noise = 0.1 is
the reference); "fixed" gives every sequence half-width `noise`. Gradients are clipped by value
(as EAGLE and HASS). The lr warms up linearly, then decays (cosine by default).

Validation. A seeded val_fraction of the sequences (whole conversations, `split_sequences`) is
held out. After every epoch they run without noise or gradients and val_metrics.parquet gets a
row: the loss terms as in training, and top-1 / top-3 agreement with the target's argmax at
unroll steps 1..3 (3 HASS steps whatever the backbone; step 1 is the ordinary forward). At step
j, row r predicts f_{r+1} from the drafter's own predictions of its last j - 1 features but the
true tokens, so top1_step{j} estimates acceptance at depth j given that the j - 1 tokens drafted
before it were right: a cheap proxy for acceptance length. The best epoch's weights (by
select_by) are kept in best/epoch-XXXX and become drafter/ at the end.

Precision. The drafter's parameters, gradients and AdamW state are fp32 whatever the target's
dtype (master weights): at lr 3e-5 most updates are below half a bf16 ulp of the weight they
change, so bf16 weights would round them away. Over a half-precision target (bf16 on a GPU) the
forward and the losses run under autocast to the target's dtype (`autocast`); the frozen target
stays in its dtype. `checkpoint_dtype` sets the dtype of the finished drafter's weights; the
resumable state and best/ keep fp32, so resume stays exact.

Resume. The split depends only on (seed, number of sequences), the data order only on
(seed, epoch) and the noise only on (seed, step); the weights, optimizer, RNG states and
validation rows travel in the saved state (`taps.checkpoint`, which also keeps the best epoch).
A run resumed from its last checkpoint ends with the same weights, validation rows and
selected drafter as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from dataclasses import dataclass
from typing import Protocol, Sequence

import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm
from transformers import DynamicCache

from taps import parallel
from taps.checkpoint import clear_other_run, load_state, prune_best, run_identity, save_best, save_final, save_state, select_best
from taps.data import write_parquet_atomic
from taps.drafter import ARCHITECTURES, Drafter, DrafterConfig
from taps.features import FeatureSequence, FeatureShards
from taps.target import TargetModel
from taps.tree import additive_mask

BACKBONES = ("eagle2", "hass")
DECAYS = ("linear", "cosine")
NOISE_SCALES = ("length", "fixed")
VAL_STEPS = 3  # unroll steps whose agreements validation reports
AGREEMENTS = tuple(f"top{k}_step{j}" for j in range(1, VAL_STEPS + 1) for k in (1, 3))  # higher is better
SELECT_BY = ("loss", *AGREEMENTS)  # loss: lower is better
BUCKET = 256  # sequences sorted by length together when forming batches (less padding)
CHECKPOINT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class TrainConfig:
    """How a drafter is trained (EAGLE-2 or HASS)."""

    backbone: str = "eagle2"  # "eagle2" or "hass"
    epochs: int = 20  # passes over the training sequences
    lr: float = 3e-5  # peak learning rate (AdamW)
    weight_decay: float = 0.01  # AdamW decoupled weight decay (torch's default, as the reference)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas (the reference's)
    warmup_steps: int | None = None  # linear warmup steps; None: 1% of all steps (HASS's total // 100)
    decay: str = "cosine"  # after warmup the lr falls to 0 at the last step: "cosine" or "linear"
    grad_clip: float = 0.5  # clip every gradient element to [-grad_clip, grad_clip]; 0: no clipping
    batch_tokens: int = 2048  # padded rows per step, B x longest (a longer sequence goes alone)
    max_length: int = 2048  # sequences are cut to their first max_length tokens
    noise: float = 0.1  # half-width of the uniform noise on the input features (at 512 tokens for "length")
    noise_scale: str = "length"  # "length": half-width noise * 512 / tokens (the reference); "fixed": noise
    feature_weight: float = 1.0  # weight of the SmoothL1 feature regression
    ce_weight: float = 0.1  # weight of the soft cross-entropy against the target's distribution
    hass_topk: int = 10  # HASS: K of the top-K distillation term
    hass_topk_weight: float = 1.0  # HASS: weight of the top-K term (the reference's second stage)
    hass_steps: int = 3  # HASS: unrolled steps of harmonized context alignment (1 = none)
    val_fraction: float = 0.05  # sequences held out for validation after each epoch; 0: none (keep the last)
    select_by: str = "top1_step1"  # validation column the kept epoch is best in: an agreement or "loss"
    save_every: int = 500  # optimizer steps between resumable checkpoints (and metrics writes)
    seed: int = 0  # seeds the drafter's init, the split, the data order and the noise
    init_seed: int | None = None  # seeds the drafter's init alone, in place of `seed` (None: `seed`)
    draft_vocab_size: int | None = None  # must equal the shards' d2t size; None: take it from them
    warm_start: str | None = None  # drafter checkpoint directory to start from (e.g. EAGLE-2 for HASS)
    checkpoint_dtype: str = "float32"  # dtype of the finished drafter/ weights: float32, bfloat16 or float16
    architecture: str = "taps"  # the drafter's layout: "taps" or "eagle" (EAGLE's exact one; taps.drafter)

    def __post_init__(self) -> None:
        checks = [
            (self.backbone in BACKBONES, f"backbone must be one of {BACKBONES}, got {self.backbone!r}"),
            (self.decay in DECAYS, f"decay must be one of {DECAYS}, got {self.decay!r}"),
            (self.noise_scale in NOISE_SCALES, f"noise_scale must be one of {NOISE_SCALES}, got {self.noise_scale!r}"),
            (self.select_by in SELECT_BY, f"select_by must be one of {SELECT_BY}, got {self.select_by!r}"),
            (0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
             f"betas must be two values in [0, 1), got {self.betas}"),
            (self.warmup_steps is None or self.warmup_steps >= 0,
             f"warmup_steps must be >= 0 or None, got {self.warmup_steps}"),
            (self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}"),
            (self.batch_tokens >= 1, f"batch_tokens must be >= 1, got {self.batch_tokens}"),
            (self.max_length >= 2, f"max_length must be >= 2, got {self.max_length}"),
            (self.noise >= 0, f"noise must be >= 0, got {self.noise}"),
            (min(self.feature_weight, self.ce_weight, self.hass_topk_weight) >= 0, "loss weights must be >= 0"),
            (self.hass_topk >= 1, f"hass_topk must be >= 1, got {self.hass_topk}"),
            (self.hass_steps >= 1, f"hass_steps must be >= 1, got {self.hass_steps}"),
            (self.save_every >= 1, f"save_every must be >= 1, got {self.save_every}"),
            (self.draft_vocab_size is None or self.draft_vocab_size >= 1, "draft_vocab_size must be >= 1 or None"),
            (self.checkpoint_dtype in CHECKPOINT_DTYPES,
             f"checkpoint_dtype must be one of {sorted(CHECKPOINT_DTYPES)}, got {self.checkpoint_dtype!r}"),
            (self.architecture in ARCHITECTURES, f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{message}")
        object.__setattr__(self, "betas", tuple(self.betas))

    @property
    def steps(self) -> int:
        """Unrolled steps per batch: hass_steps for HASS, 1 for EAGLE-2."""
        return self.hass_steps if self.backbone == "hass" else 1


class Features(Protocol):
    """What training reads: `FeatureShards`, or anything presenting sequences the same way."""

    meta: dict
    lengths: list[int]  # tokens of every sequence
    d2t: Tensor  # [N] draft id -> target id
    hidden_size: int

    def sequence(self, i: int, max_length: int | None = None) -> FeatureSequence: ...

    def __len__(self) -> int: ...


# --- batches: padded sequences ---------------------------------------------------------------
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


def _seed(*keys: int) -> int:
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
    order = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(seed, -2, n))).tolist()
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
        rng = torch.Generator().manual_seed(_seed(config.seed, epoch))
        order = [train[j] for j in torch.randperm(len(train), generator=rng).tolist() if rows[train[j]] >= 1]
        batches = [b for w in range(0, len(order), BUCKET) for b in _cut(order[w:w + BUCKET], rows, config)]
        plan += [(epoch, batches[j]) for j in torch.randperm(len(batches), generator=rng).tolist()]
    return plan


def _cut(window: list[int], rows: list[int], config: TrainConfig) -> list[list[int]]:
    """Sort a window of sequence ids by length, longest first; cut it into batches within budget."""
    batches: list[list[int]] = []
    for i in sorted(window, key=lambda i: rows[i], reverse=True):
        if not batches or (len(batches[-1]) + 1) * rows[batches[-1][0]] > config.batch_tokens:
            batches.append([])
        batches[-1].append(i)
    return batches


# --- masks -----------------------------------------------------------------------------------
def alignment_mask(n: int, step: int) -> Tensor:
    """HASS step `step` (1-based) of one sequence of n rows: [n, step * n] bool.

    Query row r (the step's own block) may attend to target-feature keys c <= r - (step - 1)
    (block 0) and to the one key c = r - (step - 1 - b) of each drafter block b = 1..step-1.
    Step 1 is the causal mask.
    """
    pos = torch.arange(n)
    back = pos[:, None] - pos[None, :]  # [n, n]: how far key c lies behind query r
    return torch.cat([back >= step - 1] + [back == step - 1 - b for b in range(1, step)], dim=1)


def unrolled_mask(n: int, steps: int) -> Tensor:
    """[S * n, S * n] bool: block row b (step b + 1's queries) is alignment_mask(n, b + 1), padded."""
    rows = [alignment_mask(n, b + 1) for b in range(steps)]
    return torch.cat([F.pad(r, (0, steps * n - r.shape[1])) for r in rows])


# --- noise and learning rate: pure functions of the step -------------------------------------
def noise_width(lengths: Sequence[int], config: TrainConfig) -> Tensor:
    """[B] half-width of each sequence's noise; lengths: real rows (n - 1), the reference's L is n."""
    if config.noise_scale == "fixed":
        return torch.full((len(lengths),), config.noise)
    return torch.tensor([config.noise * 512 / (rows + 1) for rows in lengths])


def feature_noise(batch: Batch, config: TrainConfig, step: int) -> Tensor:
    """[B, L, H] uniform noise for the batch of optimizer step `step`, on the CPU (0 on padding).

    A sequence's noise is a function of (seed, step, its id) alone, whatever else shares its
    batch: the processes of a data-parallel run draw what one process would.
    """
    B, L, H = batch.features.shape
    unit = torch.zeros(B, L, H)
    for b, (seq, rows) in enumerate(zip(batch.ids or range(B), batch.lengths)):
        rng = torch.Generator().manual_seed(_seed(config.seed, -1, step, seq))
        unit[b, :rows] = torch.rand(rows, H, generator=rng) * 2 - 1  # [rows, H] in [-1, 1)
    return unit * noise_width(batch.lengths, config)[:, None, None]


def learning_rate(step: int, total: int, config: TrainConfig) -> float:
    """Linear warmup to config.lr, then cosine or linear decay towards 0 at step `total`."""
    warmup = config.warmup_steps if config.warmup_steps is not None else total // 100
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if config.decay == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * (1 - progress)


def autocast(drafter: Drafter) -> contextlib.AbstractContextManager:
    """Autocast to the target's dtype when it is below fp32 (the drafter's parameters stay fp32); else nothing."""
    dtype = drafter.target.dtype
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(drafter.target.device.type, dtype=dtype)


# --- losses ----------------------------------------------------------------------------------
def distill_terms(q_logits: Tensor, p_logits: Tensor, topk: int) -> tuple[Tensor, Tensor, Tensor]:
    """Draft and target logits [R, V] over the same (possibly reduced) vocabulary -> per row [R]:

    soft CE -Σ_v p_v log q_v, top-K CE -Σ_{k ∈ top-K(p)} p_k log q_k, and argmax q == argmax p.
    p = softmax(p_logits): given only the d2t rows, it is the restricted, renormalised target.
    """
    logq = torch.log_softmax(q_logits.float(), -1)
    p = torch.softmax(p_logits.float(), -1)
    ce = -(p * logq).sum(-1)
    top_p, top_ix = p.topk(min(topk, p.shape[-1]), dim=-1)
    top = -(top_p * logq.gather(-1, top_ix)).sum(-1)
    agree = q_logits.argmax(-1) == p_logits.argmax(-1)
    return ce, top, agree


def step_terms(drafter: Drafter, pred: Tensor, batch: Batch, p_logits: Tensor, topk: int) -> dict[str, Tensor]:
    """One step's loss terms and agreement counts, summed over counted rows. pred: [B, L, H]; p_logits: [R, V_d].

    agree: the target's argmax is the drafter's top-1; agree3: it is within the drafter's top-3.
    """
    counted = pred[batch.counted]  # [R, H]: the head runs on counted rows only
    feature = F.smooth_l1_loss(counted.float(), batch.targets[batch.counted].float(), reduction="none").mean(-1)
    q_logits = drafter.logits(counted)  # [R, V_d]
    ce, top, agree = distill_terms(q_logits, p_logits, topk)
    top3 = q_logits.topk(min(3, q_logits.shape[-1]), dim=-1).indices == p_logits.argmax(-1, keepdim=True)
    return {"feature": feature.sum(), "ce": ce.sum(), "topk": top.sum(), "agree": agree.sum(),
            "agree3": top3.any(-1).sum()}


def weighted_loss(terms: list[dict[str, Tensor]], config: TrainConfig) -> Tensor:
    """The training objective summed over steps and counted rows (divide by counted rows to average)."""
    topk_weight = config.hass_topk_weight if config.backbone == "hass" else 0.0
    return sum(config.feature_weight * t["feature"] + config.ce_weight * t["ce"] + topk_weight * t["topk"]
               for t in terms)


@torch.no_grad()
def unroll_inputs(drafter: Drafter, batch: Batch, features: Tensor, steps: int) -> list[Tensor]:
    """Input features [B, L, H] of every step: the target's, then each step's shifted predictions."""
    inputs, cache = [features], DynamicCache()
    for step in range(1, steps):
        mask = additive_mask(alignment_mask(features.shape[1], step), features.dtype).to(features.device)
        pred = drafter(batch.tokens, inputs[-1], batch.positions, mask, cache)  # [B, L, H]
        inputs.append(torch.cat([features[:, :1], pred[:, :-1]], dim=1))  # row r <- prediction of f_r
    return inputs


def unrolled_forward(drafter: Drafter, batch: Batch, features: Tensor, steps: int) -> list[Tensor]:
    """Predictions [B, L, H] of steps 1..S: the unroll without gradients, then one forward over all S blocks."""
    inputs = unroll_inputs(drafter, batch, features, steps)
    S, L = len(inputs), features.shape[1]
    mask = additive_mask(unrolled_mask(L, S), features.dtype).to(features.device)  # [1, 1, S*L, S*L]
    out = drafter(batch.tokens.repeat(1, S), torch.cat(inputs, dim=1), batch.positions.repeat(1, S), mask)
    return list(out.split(L, dim=1))


SUMS = ("loss", "feature_loss", "ce_loss", "topk_loss", "counted", "agree", "agree_last")  # a step's sums


def batch_loss(drafter: Drafter, batch: Batch, config: TrainConfig, step: int,
               rows: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """Noise, unroll, one forward over all steps, summed step losses; plus metric values.

    The loss is averaged over `rows` counted rows: the batch's own by default; in a data-parallel
    step, those of the global batch (`taps.parallel`). The metrics are those of this batch.
    """
    loss, sums = loss_sums(drafter, batch, config, step)
    return loss / max(rows or sums["counted"], 1), step_metrics(sums)


def loss_sums(drafter: Drafter, batch: Batch, config: TrainConfig, step: int) -> tuple[Tensor, dict[str, float]]:
    """The objective summed over the batch's counted rows, and the SUMS of its terms and agreements."""
    features = batch.features + feature_noise(batch, config, step).to(batch.features)
    with torch.no_grad():
        p_logits = drafter.logits(batch.targets[batch.counted])  # [R, V_d]
    preds = unrolled_forward(drafter, batch, features, config.steps)
    terms = [step_terms(drafter, pred, batch, p_logits, config.hass_topk) for pred in preds]
    loss = weighted_loss(terms, config)
    sums = {"loss": loss.item(), **{f"{k}_loss": sum(t[k].item() for t in terms) for k in ("feature", "ce", "topk")},
            "counted": int(batch.counted.sum()),
            "agree": int(terms[0]["agree"]), "agree_last": int(terms[-1]["agree"])}  # top-1: step 1, step S
    return loss, sums


def step_metrics(sums: dict[str, float]) -> dict[str, float]:
    """A step's metrics row from its SUMS: the loss terms per counted row, and top-1 agreement rates."""
    rows = max(sums["counted"], 1)
    return {"loss": sums["loss"] / rows, **{f"{k}_loss": sums[f"{k}_loss"] / rows for k in ("feature", "ce", "topk")},
            "counted": int(sums["counted"]), "agree": int(sums["agree"]), "agree_last": int(sums["agree_last"]),
            "top1": sums["agree"] / rows, "top1_last": sums["agree_last"] / rows}


# --- validation: held-out sequences, an acceptance proxy -------------------------------------
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
        for seqs in _cut([i for i in val_ids if rows[i] >= 1], rows, config):
            batch = make_batch(shards, seqs, config.max_length, drafter.d2t.device, drafter.fc.weight.dtype)
            with autocast(drafter):
                batch_sums = validation_sums(drafter, batch, config)
            for key, value in batch_sums.items():
                sums[key] = sums.get(key, 0) + value
    finally:
        drafter.train()
    counted = int(sums.pop("counted", 0))
    return {**{k: v / max(counted, 1) for k, v in sums.items()}, "counted": counted, "sequences": len(val_ids)}


# --- the training run ------------------------------------------------------------------------
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


def end_epoch(out_dir: str, drafter: Drafter, shards: Features, val_ids: Sequence[int], val_rows: list[dict],
              epoch: int, steps_done: int, config: TrainConfig) -> None:
    """Validate after `epoch`: append its row to val_rows and val_metrics.parquet; keep the weights if best."""
    row = {"epoch": epoch, "step": steps_done, **validate(drafter, shards, val_ids, config)}
    val_rows.append(row)
    write_parquet_atomic(pa.Table.from_pylist(val_rows), os.path.join(out_dir, "val_metrics.parquet"))
    if select_best(val_rows, config.select_by) is row:
        save_best(out_dir, drafter, row, config.select_by)
