"""The EAGLE drafter: fc(2H -> H) over [embedding(token); feature], one decoder layer.

EAGLE-2 and HASS share this architecture (they differ only in training). The drafter reads
the target's last hidden state (the lm_head's input) and predicts the next one; the target's
frozen embeddings and lm_head turn tokens into inputs and predicted features into logits, so
the drafter owns only `fc` and one decoder layer of the target's own family, built from the
target's config through `AutoModel` (no copied modeling code).

Optionally the drafter scores a reduced draft vocabulary — the N most frequent tokens, with
`d2t` mapping draft ids back to target ids — because a 262k-token head dominates CPU cost.

Two layouts (`DrafterConfig.architecture`): "taps" (fc without bias; the decoder layer as the
target's family builds it) and "eagle", EAGLE's exact one for Llama-family targets: fc with a
bias and decoder layer 0 without its input layernorm (the fc output enters attention unnormed).
The paper's released drafters, SafeAILab's and SGLang's EAGLE-2 take the second
(`taps.eagle_format` reads and writes their checkpoints).

A checkpoint is a directory: `drafter.safetensors` (fc, the layer, d2t) and `drafter.json`
(the config, the layer's config, and the target's fingerprint, checked on load).

Precision. For decoding the drafter takes the target's dtype. Training builds it with fp32
parameters (master weights, and so fp32 AdamW state) over a target that may be bf16, and runs
its forward under autocast to the target's dtype (`taps.train`); a checkpoint may be written in
another dtype than the parameters' (`save(dtype=...)`) and loads into whatever the drafter holds.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, fields

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoModel, DynamicCache

from taps.intermediates import read_json, reading
from taps.linear import speed_up_linears
from taps.target import Fingerprint, TargetModel

WEIGHTS, META = "drafter.safetensors", "drafter.json"
ARCHITECTURES = ("taps", "eagle")


@dataclass(frozen=True)
class DrafterConfig:
    """What defines a drafter beyond its target."""

    backbone: str = "eagle2"  # training recipe that produced it: "eagle2" or "hass" (same architecture)
    draft_vocab_size: int | None = None  # None: the target's full vocabulary; else the N tokens in d2t
    seed: int = 0  # seed of the random initialisation
    architecture: str = "taps"  # "taps", or "eagle": fc with a bias, no input layernorm in layer 0 (module doc)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"DrafterConfig.architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.backbone not in ("eagle2", "hass"):
            raise ValueError(f"DrafterConfig.backbone must be 'eagle2' or 'hass', got {self.backbone!r}")
        if self.draft_vocab_size is not None and self.draft_vocab_size < 1:
            raise ValueError(f"DrafterConfig.draft_vocab_size must be >= 1 or None, got {self.draft_vocab_size}")


def layer_config(target: TargetModel):
    """The target's config cut down to one full-attention decoder layer with no vocabulary."""
    cfg = copy.deepcopy(target.config)
    cfg.num_hidden_layers, cfg.vocab_size = 1, 1
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "quantization_config"):
        if hasattr(cfg, name):
            setattr(cfg, name, None)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = ["full_attention"]
    return cfg


class Drafter(nn.Module):
    """fc + one decoder layer; the target's embeddings and head are borrowed, never stored."""

    def __init__(self, target: TargetModel, config: DrafterConfig = DrafterConfig(), d2t: Tensor | None = None,
                 dtype: torch.dtype | None = None):
        """dtype: of the drafter's own parameters; None: the target's (decoding). Training passes fp32."""
        super().__init__()
        self.config = config
        self.target = target  # a plain object, not a submodule: its weights stay the target's
        self.fingerprint = target.fingerprint()
        hidden = target.hidden_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.fc = nn.Linear(2 * hidden, hidden, bias=config.architecture == "eagle")
            self.layer = AutoModel.from_config(layer_config(target))
        del self.layer.embed_tokens  # inputs arrive as embeddings
        if config.architecture == "eagle":
            self.layer.layers[0].input_layernorm = nn.Identity()
        self.layer.norm = nn.Identity()  # the drafter predicts the (already normed) feature itself
        if config.draft_vocab_size is None:
            d2t = torch.arange(target.vocab_size) if d2t is None else d2t
        elif d2t is None:
            d2t = torch.arange(config.draft_vocab_size)  # placeholder until the frequency table is set
        if d2t.ndim != 1 or (config.draft_vocab_size or target.vocab_size) != d2t.numel():
            raise ValueError(f"d2t has {d2t.numel()} ids but the drafter config asks for "
                             f"{config.draft_vocab_size or target.vocab_size}")
        if d2t.min() < 0 or d2t.max() >= target.vocab_size:
            raise ValueError(f"d2t holds ids outside the target vocabulary [0, {target.vocab_size})")
        self.register_buffer("d2t", d2t.long())
        self.to(device=target.device, dtype=dtype or target.dtype)
        speed_up_linears(self)  # a faster product for decoding's few rows on the CPU (taps.linear)
        # the head rows of the draft vocabulary, gathered once (d2t is fixed at construction); the full head
        # is passed explicitly too, so drafting reads it in the model's dtype even under the target's fp32_logits
        self.head = target.head() if config.draft_vocab_size is None else target.head(self.d2t)

    @property
    def full_vocab(self) -> bool:
        return self.config.draft_vocab_size is None

    def forward(self, tokens: Tensor, features: Tensor, position_ids: Tensor, mask: Tensor,
                cache: DynamicCache | None = None) -> Tensor:
        """tokens: [B, n]; features: [B, n, H] (the feature *before* each token); -> predicted [B, n, H]."""
        x = self.fc(torch.cat([self.target.embed(tokens), features], dim=-1))
        out = self.layer(inputs_embeds=x, attention_mask=mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=cache is not None)
        return out.last_hidden_state

    def logits(self, hidden: Tensor) -> Tensor:
        """Predicted features [..., H] -> draft logits [..., V_draft] through the target's head."""
        return self.target.logits(hidden, self.head)

    # --- checkpoints ----------------------------------------------------------------------
    def save(self, directory: str, dtype: torch.dtype | None = None) -> None:
        """Write the checkpoint atomically: weights and metadata appear together or not at all.

        dtype: of the saved floating-point weights; None: the parameters' own.
        """
        os.makedirs(directory, exist_ok=True)
        tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
                   for k, v in self.state_dict().items()}
        meta = {"config": asdict(self.config), "target": asdict(self.fingerprint),
                "layer_config": self.layer.config.to_dict()}
        for name, write in ((WEIGHTS, lambda p: save_file(tensors, p)),
                            (META, lambda p: open(p, "w").write(json.dumps(meta, indent=2)))):
            tmp = os.path.join(directory, f".{name}.tmp")
            write(tmp)
            os.replace(tmp, os.path.join(directory, name))

    @classmethod
    def load(cls, directory: str, target: TargetModel, dtype: torch.dtype | None = None) -> "Drafter":
        """Load a checkpoint for `target` (parameters in `dtype`, None: the target's); a drafter made for
        another target is refused."""
        meta_path, weights_path = os.path.join(directory, META), os.path.join(directory, WEIGHTS)
        meta = read_json(meta_path, "drafter checkpoint", directory)
        known = {f.name for f in fields(DrafterConfig)}
        config = DrafterConfig(**{k: v for k, v in meta["config"].items() if k in known})
        saved = Fingerprint(**meta["target"])
        diff = saved.mismatches(target.fingerprint())
        if diff:
            raise ValueError(f"drafter {directory!r} was trained for target {saved.name!r}, not {target.name!r}: "
                             + "; ".join(diff))
        with reading(weights_path, "drafter checkpoint", directory):
            tensors = load_file(weights_path)
        drafter = cls(target, config, d2t=tensors.get("d2t"), dtype=dtype)
        missing, unexpected = drafter.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise ValueError(f"drafter weights {weights_path!r} do not fit the architecture: "
                             f"missing {missing}, unexpected {unexpected}")
        return drafter
