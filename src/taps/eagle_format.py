"""Drafters in EAGLE's checkpoint layout: released drafters in, serving-engine drafters out.

EAGLE-1/2 (SafeAILab), HASS and the TAPS paper release a drafter as a directory holding
`config.json` (a Llama config with one hidden layer) and its weights, `model.safetensors` or
`pytorch_model.bin`, under EAGLE's names:

    embed_tokens.weight            a copy of the target's input embedding (not a parameter)
    fc.weight, fc.bias             the 2H -> H projection of [embedding; feature]
    layers.0.<rest>                the decoder layer; layer 0 has no input_layernorm

SGLang's `LlamaForCausalLMEagle` (`--speculative-algorithm EAGLE`) loads the same names, and a
reduced draft vocabulary as a separate token map (`--speculative-token-map`: a torch tensor of
the draft tokens' target ids, our `d2t`), so one layout serves both ways.

`load_eagle` reads such a directory, or a hub id fetched with `huggingface_hub`, into a
`Drafter` with `architecture="eagle"` for a given target: the layer's shapes and the vocabulary
must match the target's config, and the embedding the drafter was trained with must be the
target's, else one error says which. `save_eagle` writes a trained eagle-architecture drafter
back out, atomically. A pickle checkpoint is read only with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from taps.drafter import Drafter, DrafterConfig, layer_config
from taps.target import TargetModel

CONFIG, SAFETENSORS, PICKLE, TOKEN_MAP = "config.json", "model.safetensors", "pytorch_model.bin", "token_map.pt"
EMBED = "embed_tokens.weight"
ENGINE_ARCHITECTURE = "LlamaForCausalLMEagle"  # SGLang's EAGLE-2 draft class: Llama targets only
# config fields that fix the layer's shapes: a released drafter must agree with the target on each
SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "vocab_size")
# largest |difference| allowed, relative to the embedding's largest |value|: a bf16 copy rounds by up to 2^-9 of it
EMBED_TOLERANCE = 4e-3


def to_eagle_name(name: str) -> str | None:
    """Our state-dict name -> EAGLE's (None: not part of the layout, e.g. d2t)."""
    if name.startswith("fc."):
        return name
    if name.startswith("layer.layers."):
        return name[len("layer."):]
    return None


def from_eagle_name(name: str) -> str | None:
    """EAGLE's name -> ours (None: not a drafter parameter)."""
    if name.startswith("fc."):
        return name
    if name.startswith("layers."):
        return "layer." + name
    return None


def rope_theta(config: dict) -> float | None:
    """RoPE's base of a config dict, in transformers 5's layout (rope_parameters) or the older one."""
    return (config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta"))


def resolve(source: str) -> str:
    """A local directory as it is; otherwise a hub id, fetched (config, weights, token map) into the hub cache."""
    if os.path.isdir(source):
        return source
    if os.path.exists(source) or source.count("/") != 1:
        raise FileNotFoundError(f"released drafter {source!r} is neither a checkpoint directory nor a hub id "
                                "('owner/name')")
    from huggingface_hub import snapshot_download
    try:
        return snapshot_download(source, allow_patterns=[CONFIG, SAFETENSORS, PICKLE, TOKEN_MAP])
    except Exception as err:  # noqa: BLE001 - the hub's many errors become one that says what to do
        raise FileNotFoundError(f"released drafter {source!r} is no local directory, and as a hub id it cannot be "
                                f"fetched ({type(err).__name__}: {err}); download it where the hub is reachable "
                                "(compute nodes often are not) and name the local directory instead") from err


def read_eagle(directory: str) -> tuple[dict, dict[str, Tensor], Tensor | None]:
    """(config or {}, weights, token map or None) of an EAGLE-layout checkpoint directory."""
    config_path = os.path.join(directory, CONFIG)
    config = {}
    if os.path.isfile(config_path):  # some training runs saved weights alone: the shapes are checked on load
        with open(config_path) as f:
            config = json.load(f)
    st, pt = os.path.join(directory, SAFETENSORS), os.path.join(directory, PICKLE)
    if not (os.path.isfile(st) or os.path.isfile(pt)):
        raise FileNotFoundError(f"EAGLE checkpoint {directory!r} has neither {SAFETENSORS} nor {PICKLE}")
    try:
        weights = load_file(st) if os.path.isfile(st) else torch.load(pt, map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"EAGLE checkpoint weights in {directory!r} are corrupt or not plain tensors: {err}") from err
    token_map = os.path.join(directory, TOKEN_MAP)
    return config, weights, read_token_map(token_map) if os.path.isfile(token_map) else None


def read_token_map(path: str) -> Tensor:
    """The draft vocabulary's target ids from a token map (SGLang's: a tensor, or a list, saved by torch)."""
    try:
        return torch.as_tensor(torch.load(path, map_location="cpu", weights_only=True)).long().flatten()
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, TypeError, ValueError) as err:
        raise ValueError(f"token map {path!r} is corrupt or not a list of token ids: {err}") from err


SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def saved_dtype(path: str, name: str = "fc.weight") -> torch.dtype:
    """The dtype `name` is stored in, read from a safetensors file's header."""
    with safe_open(path, "pt") as f:
        return SAFETENSORS_DTYPES[f.get_slice(name).get_dtype()]


def check_against_target(source: str, config: dict, weights: dict[str, Tensor], target: TargetModel) -> None:
    """Refuse a checkpoint whose layer shapes, vocabulary or embedding are not the target's."""
    ours = layer_config(target).to_dict() | {"vocab_size": target.vocab_size}
    diff = [f"{k}: {config.get(k)!r} != {ours.get(k)!r}" for k in SHAPE_FIELDS
            if k in config and ours.get(k) is not None and config[k] != ours[k]]
    if None not in (rope_theta(config), rope_theta(ours)) and float(rope_theta(config)) != float(rope_theta(ours)):
        diff.append(f"rope_theta: {rope_theta(config)!r} != {rope_theta(ours)!r}")
    if diff:
        raise ValueError(f"released drafter {source!r} was made for another target than {target.name!r}: "
                         + "; ".join(diff))
    if EMBED in weights:
        theirs, own = weights[EMBED].float(), target.body.get_input_embeddings().weight.detach().float().cpu()
        if theirs.shape != own.shape:
            raise ValueError(f"released drafter {source!r} has a {tuple(theirs.shape)} embedding, target "
                             f"{target.name!r} a {tuple(own.shape)} one: it was made for another target")
        gap, scale = (theirs - own).abs().max().item(), own.abs().max().item()
        if gap > EMBED_TOLERANCE * scale:
            raise ValueError(f"released drafter {source!r} was trained with another embedding than target "
                             f"{target.name!r}'s (largest difference {gap:.3g}, values up to {scale:.3g}): "
                             "load it with the target it was released for")


def load_eagle(source: str, target: TargetModel, backbone: str = "eagle2", token_map: str | None = None,
               dtype: torch.dtype | str | None = None) -> Drafter:
    """An EAGLE-layout checkpoint (directory or hub id) as a Drafter of `target`.

    token_map: a torch tensor file of the draft vocabulary's target ids (SGLang's token map), for a
    drafter with a reduced vocabulary; by default the directory's token_map.pt, if any, else the full
    vocabulary. backbone: the recipe that trained it ("eagle2" or "hass"), kept as a label. dtype: of
    the parameters; None: the target's (to decode with), "checkpoint": as released (to store it).
    """
    directory = resolve(source)
    config, weights, d2t = read_eagle(directory)
    if token_map is not None:
        d2t = read_token_map(token_map)
    check_against_target(source, config, weights, target)
    state = {}
    for name, value in weights.items():
        if name == EMBED or name.endswith("rotary_emb.inv_freq"):  # a derived buffer older checkpoints saved
            continue
        ours = from_eagle_name(name)
        if ours is None:
            raise ValueError(f"released drafter {source!r} holds {name!r}, which is not in EAGLE's layout "
                             "(fc.*, layers.0.*, embed_tokens.weight)")
        state[ours] = value
    if "fc.weight" in state and "fc.bias" not in state and config.get("bias") is False:
        state["fc.bias"] = torch.zeros(state["fc.weight"].shape[0], dtype=state["fc.weight"].dtype)  # the same fc
    dconfig = DrafterConfig(backbone=backbone, draft_vocab_size=None if d2t is None else d2t.numel(),
                            architecture="eagle")
    if dtype == "checkpoint":
        dtype = state["fc.weight"].dtype if "fc.weight" in state else None
    drafter = Drafter(target, dconfig, d2t=d2t, dtype=dtype)
    state["d2t"] = drafter.d2t
    try:
        missing, unexpected = drafter.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a shape differs from the target's layer
        raise ValueError(f"released drafter {source!r} does not fit target {target.name!r}: {err}") from err
    if missing or unexpected:
        raise ValueError(f"released drafter {source!r} does not fit EAGLE's architecture on target {target.name!r}: "
                         f"missing {missing}, unexpected {unexpected}")
    return drafter


def engine_config(drafter: Drafter, dtype: torch.dtype) -> dict:
    """config.json of the export: the target's config cut to one layer, named for SGLang's EAGLE class.

    RoPE is written both ways (rope_parameters, and rope_theta/rope_scaling as transformers 4 and the
    engines built on it read it), so an engine never falls back to a default base.
    """
    config = {k: v for k, v in layer_config(drafter.target).to_dict().items() if k != "dtype"}
    full = drafter.target.config.to_dict()
    config |= {k: full.get(k) for k in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")}
    rope = dict(config.get("rope_parameters") or {})
    if rope:
        config["rope_theta"] = rope.get("rope_theta")
        if rope.get("rope_type", "default") != "default":
            config["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return config | {"architectures": [ENGINE_ARCHITECTURE], "num_hidden_layers": 1, "bias": True,
                     "torch_dtype": str(dtype).removeprefix("torch.")}


def save_eagle(drafter: Drafter, directory: str, dtype: torch.dtype | None = None) -> None:
    """Write `drafter` in EAGLE's layout (SGLang's LlamaForCausalLMEagle), atomically.

    Writes config.json, model.safetensors (EAGLE's names, the target's embedding included, as EAGLE's
    own loader requires it) and, for a reduced vocabulary, token_map.pt. dtype: of the written weights
    (None: the drafter's). Only the "eagle" architecture has this layout, and SGLang's class takes Llama targets.
    """
    if drafter.config.architecture != "eagle":
        raise ValueError("only a drafter with architecture 'eagle' has EAGLE's layout (layer 0 of this one has an "
                         "input layernorm and its fc no bias): train it with train.<backbone>.architecture: eagle")
    model_type = drafter.target.config.model_type
    if model_type != "llama":
        raise ValueError(f"SGLang's EAGLE-2 draft class {ENGINE_ARCHITECTURE} takes Llama targets, not "
                         f"{model_type!r} ones (docs/released-drafters.md: Serving engines)")
    cast = (lambda t: t.to(dtype)) if dtype is not None else (lambda t: t)
    tensors = {to_eagle_name(k): cast(v).detach().contiguous().cpu()
               for k, v in drafter.state_dict().items() if to_eagle_name(k)}
    tensors[EMBED] = cast(drafter.target.body.get_input_embeddings().weight).detach().contiguous().cpu()
    config = engine_config(drafter, dtype or drafter.fc.weight.dtype)
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".eagle-export-", dir=parent)
    try:
        save_file(tensors, os.path.join(tmp, SAFETENSORS), metadata={"format": "pt"})
        with open(os.path.join(tmp, CONFIG), "w") as f:
            json.dump(config, f, indent=2)
        if not drafter.full_vocab:
            torch.save(drafter.d2t.cpu(), os.path.join(tmp, TOKEN_MAP))
        if os.path.isdir(directory):
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
