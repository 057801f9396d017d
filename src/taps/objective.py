"""The training objective: EAGLE-2 feature regression, and HASS on top of it, over one batch.

A batch (`taps.batching.Batch`) holds rows (f_i + noise, x_{i+1}) whose outputs ĥ_i regress
f_{i+1}; only counted rows (a reply token's) enter the loss.

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
the reference); "fixed" gives every sequence half-width `noise`.

Over a half-precision target the forward and the losses run under autocast to the target's
dtype (`autocast`; `taps.train`, Precision).
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import DynamicCache

from taps.batching import Batch, derived_seed
from taps.drafter import Drafter
from taps.train_config import TrainConfig
from taps.tree import additive_mask


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


# --- noise: a pure function of the step ------------------------------------------------------
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
        rng = torch.Generator().manual_seed(derived_seed(config.seed, -1, step, seq))
        unit[b, :rows] = torch.rand(rows, H, generator=rng) * 2 - 1  # [rows, H] in [-1, 1)
    return unit * noise_width(batch.lengths, config)[:, None, None]


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
