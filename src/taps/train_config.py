"""How a drafter is trained: `TrainConfig`, one field per setting, checked when it is built.

Also the names its choices take: backbones, lr decays, noise scales, checkpoint dtypes, and the
validation columns an epoch can be selected by (`taps.validation`). Training itself:
`taps.train`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from taps.drafter import ARCHITECTURES

BACKBONES = ("eagle2", "hass")
DECAYS = ("linear", "cosine")
NOISE_SCALES = ("length", "fixed")
VAL_STEPS = 3  # unroll steps whose agreements validation reports
AGREEMENTS = tuple(f"top{k}_step{j}" for j in range(1, VAL_STEPS + 1) for k in (1, 3))  # higher is better
SELECT_BY = ("loss", *AGREEMENTS)  # loss: lower is better
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
