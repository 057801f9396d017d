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

Noise is uniform in [-noise, noise] on the target features (the reference's half-width is
0.1 * 512 / sequence_length; we keep it fixed). Gradients are clipped by value (as EAGLE and
HASS). The data order depends only on (seed, epoch) and the noise only on (seed, step), so a run
resumed from its last checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm
from transformers import DynamicCache

from taps.data import write_parquet_atomic
from taps.drafter import Drafter, DrafterConfig
from taps.features import FeatureShards
from taps.target import TargetModel
from taps.tree import additive_mask

BACKBONES = ("eagle2", "hass")
DECAYS = ("linear", "cosine")
BUCKET = 256  # sequences sorted by length together when forming batches (less padding)
BOOKKEEPING_FIELDS = ("save_every",)  # TrainConfig fields that do not change the trained weights


@dataclass(frozen=True)
class TrainConfig:
    """How a drafter is trained (EAGLE-2 or HASS)."""

    backbone: str = "eagle2"  # "eagle2" or "hass"
    epochs: int = 20  # passes over the training sequences
    lr: float = 3e-5  # peak learning rate (AdamW)
    weight_decay: float = 0.01  # AdamW decoupled weight decay (torch's default, as the reference)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas (the reference's)
    warmup_steps: int | None = None  # linear warmup steps; None: 1% of all steps (HASS's total // 100)
    decay: str = "linear"  # after warmup the lr falls to 0 at the last step: "linear" or "cosine"
    grad_clip: float = 0.5  # clip every gradient element to [-grad_clip, grad_clip]; 0: no clipping
    batch_tokens: int = 2048  # padded rows per step, B x longest (a longer sequence goes alone)
    max_length: int = 2048  # sequences are cut to their first max_length tokens
    noise: float = 0.1  # half-width of the uniform noise added to the input target features
    feature_weight: float = 1.0  # weight of the SmoothL1 feature regression
    ce_weight: float = 0.1  # weight of the soft cross-entropy against the target's distribution
    hass_topk: int = 10  # HASS: K of the top-K distillation term
    hass_topk_weight: float = 1.0  # HASS: weight of the top-K term (the reference's second stage)
    hass_steps: int = 3  # HASS: unrolled steps of harmonized context alignment (1 = none)
    save_every: int = 500  # optimizer steps between resumable checkpoints (and metrics writes)
    seed: int = 0  # seeds the drafter's init, the data order and the noise
    draft_vocab_size: int | None = None  # must equal the shards' d2t size; None: take it from them
    warm_start: str | None = None  # drafter checkpoint directory to start from (e.g. EAGLE-2 for HASS)

    def __post_init__(self) -> None:
        checks = [
            (self.backbone in BACKBONES, f"backbone must be one of {BACKBONES}, got {self.backbone!r}"),
            (self.decay in DECAYS, f"decay must be one of {DECAYS}, got {self.decay!r}"),
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
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{message}")
        object.__setattr__(self, "betas", tuple(self.betas))

    @property
    def steps(self) -> int:
        """Unrolled steps per batch: hass_steps for HASS, 1 for EAGLE-2."""
        return self.hass_steps if self.backbone == "hass" else 1


# --- feature shards: random access by sequence (taps.features writes them) --------------------
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

    @property
    def positions(self) -> Tensor:
        """[B, L] position ids: i for row i."""
        return torch.arange(self.tokens.shape[1], device=self.tokens.device).expand_as(self.tokens)


def make_batch(shards: FeatureShards, seqs: Sequence[int], max_length: int, device, dtype) -> Batch:
    """Sequences `seqs` as one padded batch on `device`, features cast to `dtype`."""
    parts = [shards.sequence(i, max_length) for i in seqs]
    rows = max(len(ids) for ids, _, _ in parts) - 1

    def stack(xs: list[Tensor]) -> Tensor:  # pad each [n, ...] to [rows, ...] along dim 0, then stack
        return torch.stack([F.pad(x, (0, 0) * (x.ndim - 1) + (0, rows - len(x))) for x in xs]).to(device)

    return Batch(
        tokens=stack([ids[1:] for ids, _, _ in parts]),
        features=stack([h[:-1].to(dtype) for _, _, h in parts]),
        targets=stack([h[1:].to(dtype) for _, _, h in parts]),
        counted=stack([mask[1:] for _, mask, _ in parts]),
        lengths=tuple(len(ids) - 1 for ids, _, _ in parts),
    )


def _seed(*keys: int) -> int:
    """A 63-bit seed that depends only on the keys (e.g. (seed, epoch) or (seed, step))."""
    return int.from_bytes(hashlib.sha256(repr(keys).encode()).digest()[:8], "little") >> 1


def plan_batches(lengths: Sequence[int], config: TrainConfig) -> list[tuple[int, list[int]]]:
    """Every optimizer step's (epoch, sequence ids), from (seed, epoch) alone.

    Each epoch shuffles the sequences; windows of BUCKET of them are sorted by length (less
    padding) and cut into batches of at most batch_tokens padded rows (count x longest, a longer
    sequence goes alone); then the epoch's batches are shuffled.
    """
    rows = [min(n, config.max_length) - 1 for n in lengths]
    plan = []
    for epoch in range(config.epochs):
        rng = torch.Generator().manual_seed(_seed(config.seed, epoch))
        order = [i for i in torch.randperm(len(rows), generator=rng).tolist() if rows[i] >= 1]
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
    """One step's loss terms, averaged over counted rows. pred: [B, L, H]; p_logits: [R, V_d]."""
    rows = max(int(batch.counted.sum()), 1)
    counted = pred[batch.counted]  # [R, H]: the head runs on counted rows only
    feature = F.smooth_l1_loss(counted.float(), batch.targets[batch.counted].float(), reduction="none").mean(-1)
    ce, top, agree = distill_terms(drafter.logits(counted), p_logits, topk)
    return {"feature": feature.sum() / rows, "ce": ce.sum() / rows, "topk": top.sum() / rows, "agree": agree.sum()}


@torch.no_grad()
def unroll_inputs(drafter: Drafter, batch: Batch, features: Tensor, steps: int) -> list[Tensor]:
    """Input features [B, L, H] of every step: the target's, then each step's shifted predictions."""
    inputs, cache = [features], DynamicCache()
    for step in range(1, steps):
        mask = additive_mask(alignment_mask(features.shape[1], step), features.dtype).to(features.device)
        pred = drafter(batch.tokens, inputs[-1], batch.positions, mask, cache)  # [B, L, H]
        inputs.append(torch.cat([features[:, :1], pred[:, :-1]], dim=1))  # row r <- prediction of f_r
    return inputs


def batch_loss(drafter: Drafter, batch: Batch, config: TrainConfig, step: int) -> tuple[Tensor, dict[str, float]]:
    """Noise, unroll, one forward over all steps, summed step losses; plus metric values."""
    noise_rng = torch.Generator().manual_seed(_seed(config.seed, -1, step))
    noise = (torch.rand(batch.features.shape, generator=noise_rng) * 2 - 1) * config.noise
    features = batch.features + noise.to(batch.features)
    with torch.no_grad():
        p_logits = drafter.logits(batch.targets[batch.counted])  # [R, V_d]
    inputs = unroll_inputs(drafter, batch, features, config.steps)
    S, L = len(inputs), features.shape[1]
    mask = additive_mask(unrolled_mask(L, S), features.dtype).to(features.device)  # [1, 1, S*L, S*L]
    out = drafter(batch.tokens.repeat(1, S), torch.cat(inputs, dim=1), batch.positions.repeat(1, S), mask)
    terms = [step_terms(drafter, pred, batch, p_logits, config.hass_topk) for pred in out.split(L, dim=1)]
    topk_weight = config.hass_topk_weight if config.backbone == "hass" else 0.0
    loss = sum(config.feature_weight * t["feature"] + config.ce_weight * t["ce"] + topk_weight * t["topk"]
               for t in terms)
    counted, agree, agree_last = int(batch.counted.sum()), int(terms[0]["agree"]), int(terms[-1]["agree"])
    metrics = {"loss": loss.item(), **{f"{k}_loss": sum(t[k].item() for t in terms) for k in ("feature", "ce", "topk")},
               "counted": counted, "agree": agree, "agree_last": agree_last,  # top-1 agreements: step 1, step S
               "top1": agree / max(counted, 1), "top1_last": agree_last / max(counted, 1)}
    return loss, metrics


def learning_rate(step: int, total: int, config: TrainConfig) -> float:
    """Linear warmup to config.lr, then linear or cosine decay towards 0 at step `total`."""
    warmup = config.warmup_steps if config.warmup_steps is not None else total // 100
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if config.decay == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * (1 - progress)


# --- resumable training state ----------------------------------------------------------------
def save_state(out_dir: str, steps_done: int, drafter: Drafter, optimizer: torch.optim.Optimizer, run: dict) -> None:
    """Write state/step-XXXXXXXX atomically (a temporary directory renamed), then drop older ones.

    Weights, optimizer tensors and RNG states go to safetensors; scalars and the run's identity
    (config, data size) to JSON. The lr schedule is a pure function of the step: no state.
    """
    root = os.path.join(out_dir, "state")
    tmp = os.path.join(root, f".tmp-{steps_done:08d}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    opt = optimizer.state_dict()
    save_file({k: v.detach().contiguous().cpu() for k, v in drafter.state_dict().items()},
              os.path.join(tmp, "drafter.safetensors"))
    save_file({f"{i}.{k}": v.contiguous().cpu() for i, s in opt["state"].items() for k, v in s.items()
               if torch.is_tensor(v)}, os.path.join(tmp, "optimizer.safetensors"))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda.{d}": s for d, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, os.path.join(tmp, "rng.safetensors"))
    scalars = {str(i): {k: v for k, v in s.items() if not torch.is_tensor(v)} for i, s in opt["state"].items()}
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump({"steps_done": steps_done, "run": run, "param_groups": opt["param_groups"], "scalars": scalars}, f)
    final = os.path.join(root, f"step-{steps_done:08d}")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for name in os.listdir(root):  # older states and leftovers of interrupted saves
        if name != os.path.basename(final):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def load_state(out_dir: str, drafter: Drafter, optimizer: torch.optim.Optimizer, run: dict) -> int:
    """Restore the newest complete state into drafter and optimizer; returns the steps done (0: none)."""
    root = os.path.join(out_dir, "state")
    names = sorted(n for n in os.listdir(root) if n.startswith("step-")) if os.path.isdir(root) else []
    if not names:
        return 0
    path = os.path.join(root, names[-1])
    with open(os.path.join(path, "state.json")) as f:
        meta = json.load(f)
    if meta["run"] != run:
        raise ValueError(f"{out_dir!r} holds a run with other settings; use a new out_dir.\n"
                         f"saved: {meta['run']}\nnow:   {run}")
    drafter.load_state_dict(load_file(os.path.join(path, "drafter.safetensors")))
    state: dict[int, dict] = {int(i): dict(s) for i, s in meta["scalars"].items()}
    for key, value in load_file(os.path.join(path, "optimizer.safetensors")).items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    rng = load_file(os.path.join(path, "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng[k] for k in sorted(k for k in rng if k.startswith("cuda."))])
    return meta["steps_done"]


# --- the training run ------------------------------------------------------------------------
def build_drafter(target: TargetModel, shards: FeatureShards, config: TrainConfig) -> Drafter:
    """A fresh (or warm-started) drafter whose draft vocabulary is the shards' d2t."""
    d2t = shards.d2t
    if config.draft_vocab_size is not None and config.draft_vocab_size != d2t.numel():
        raise ValueError(f"TrainConfig.draft_vocab_size is {config.draft_vocab_size} but the features' "
                         f"vocab.safetensors maps {d2t.numel()} draft ids")
    full = d2t.numel() == target.vocab_size and torch.equal(d2t, torch.arange(target.vocab_size))
    dconfig = DrafterConfig(backbone=config.backbone, draft_vocab_size=None if full else d2t.numel(), seed=config.seed)
    drafter = Drafter(target, dconfig, None if full else d2t)
    if config.warm_start:
        start = Drafter.load(config.warm_start, target)
        if not torch.equal(start.d2t.cpu(), drafter.d2t.cpu()):
            raise ValueError(f"warm_start {config.warm_start!r} has another draft vocabulary (d2t) than the features")
        drafter.load_state_dict(start.state_dict())
    return drafter


def train_drafter(target: TargetModel, features_dir: str, out_dir: str, config: TrainConfig = TrainConfig(),
                  progress: bool = True, max_steps: int | None = None) -> pd.DataFrame:
    """Train (or resume training) a drafter; returns the per-step metrics (also in metrics.parquet).

    Trains in the target's dtype: load the target in float32 for training. Stops early after
    `max_steps` optimizer steps in all (a checkpoint is saved there); a later call resumes.
    The finished drafter goes to out_dir/drafter with train_config.json beside it.
    """
    shards = FeatureShards(features_dir, target.fingerprint())  # refuses features of another target
    torch.manual_seed(config.seed)
    plan = plan_batches(shards.lengths, config)
    drafter = build_drafter(target, shards, config).train()
    optimizer = torch.optim.AdamW(drafter.parameters(), lr=config.lr, betas=config.betas,
                                  weight_decay=config.weight_decay)
    run = {"config": {k: v for k, v in json.loads(json.dumps(asdict(config))).items() if k not in BOOKKEEPING_FIELDS},
           "sequences": len(shards), "steps": len(plan)}
    done = load_state(out_dir, drafter, optimizer, run)
    metrics_path = os.path.join(out_dir, "metrics.parquet")
    rows = pd.read_parquet(metrics_path).to_dict("records") if done and os.path.exists(metrics_path) else []
    rows = [r for r in rows if r["step"] < done]
    stop = len(plan) if max_steps is None else min(len(plan), max_steps)
    for step in tqdm(range(done, stop), initial=done, total=len(plan), disable=not progress, desc="train"):
        rows.append(train_step(drafter, optimizer, shards, plan, step, config))
        if (step + 1) % config.save_every == 0 or step + 1 == stop:
            write_parquet_atomic(pa.Table.from_pylist(rows), metrics_path)
            save_state(out_dir, step + 1, drafter, optimizer, run)
    if stop == len(plan):
        save_final(out_dir, drafter, config)
    return pd.DataFrame(rows)


def train_step(drafter: Drafter, optimizer: torch.optim.Optimizer, shards: FeatureShards,
               plan: list[tuple[int, list[int]]], step: int, config: TrainConfig) -> dict:
    """One optimizer step on batch `step` of the plan; returns its metrics row."""
    start = time.perf_counter()
    epoch, seqs = plan[step]
    batch = make_batch(shards, seqs, config.max_length, drafter.d2t.device, drafter.fc.weight.dtype)
    lr = learning_rate(step, len(plan), config)
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss, metrics = batch_loss(drafter, batch, config, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_value_(drafter.parameters(), config.grad_clip)
    optimizer.step()
    return {"step": step, "epoch": epoch, "lr": lr, **metrics, "tokens": sum(batch.lengths),
            "padded_tokens": batch.tokens.numel(),
            "sequences": len(seqs), "seconds": time.perf_counter() - start}


def save_final(out_dir: str, drafter: Drafter, config: TrainConfig) -> None:
    """The trained drafter in out_dir/drafter, with the resolved TrainConfig beside it."""
    directory = os.path.join(out_dir, "drafter")
    drafter.save(directory)
    tmp = os.path.join(directory, ".train_config.json.tmp")
    with open(tmp, "w") as f:
        json.dump(asdict(config), f, indent=2)
    os.replace(tmp, os.path.join(directory, "train_config.json"))
