"""EAGLE's architecture and checkpoint layout: released drafters in, SGLang drafters out."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from taps import Drafter, DrafterConfig, EagleProposer, TreeConfig
from taps.eagle_format import CONFIG, EMBED, PICKLE, SAFETENSORS, TOKEN_MAP, load_eagle, save_eagle
from conftest import tiny_target

TREE = TreeConfig(total_tokens=16, depth=3, top_k=4)
# every tensor of an EAGLE-1/2 checkpoint of a Llama target (SafeAILab's cnets.Model state dict), named by hand
LAYER = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
         "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight", "post_attention_layernorm.weight"]
EAGLE_KEYS = ["embed_tokens.weight", "fc.weight", "fc.bias"] + [f"layers.0.{k}" for k in LAYER]


def _eagle_checkpoint(target, seed=0):
    """Random weights in EAGLE's exact names and shapes, with the target's embedding."""
    h, inter = target.hidden_size, target.config.intermediate_size
    kv = target.config.num_key_value_heads * target.config.head_dim
    shapes = {"fc.weight": (h, 2 * h), "fc.bias": (h,), "layers.0.self_attn.q_proj.weight": (h, h),
              "layers.0.self_attn.k_proj.weight": (kv, h), "layers.0.self_attn.v_proj.weight": (kv, h),
              "layers.0.self_attn.o_proj.weight": (h, h), "layers.0.mlp.gate_proj.weight": (inter, h),
              "layers.0.mlp.up_proj.weight": (inter, h), "layers.0.mlp.down_proj.weight": (h, inter),
              "layers.0.post_attention_layernorm.weight": (h,)}
    g = torch.Generator().manual_seed(seed)
    weights = {k: 0.2 * torch.randn(s, generator=g) for k, s in shapes.items()}
    weights[EMBED] = target.body.get_input_embeddings().weight.detach().clone()
    assert sorted(weights) == sorted(EAGLE_KEYS)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
              "intermediate_size": inter, "num_attention_heads": target.config.num_attention_heads,
              "num_key_value_heads": target.config.num_key_value_heads, "num_hidden_layers": 1,
              "vocab_size": target.vocab_size, "rope_theta": 10000.0, "bias": True, "torch_dtype": "float16"}
    return config, weights


def _write(directory, config, weights, pickle=False):
    os.makedirs(directory, exist_ok=True)
    (directory / CONFIG).write_text(json.dumps(config))
    if pickle:
        torch.save(weights, directory / PICKLE)
    else:
        save_file(weights, str(directory / SAFETENSORS))
    return str(directory)


def _tree(drafter, seed=0):
    """A draft tree after committing a short random context (as decoding does after a prefill)."""
    g = torch.Generator().manual_seed(seed)
    proposer = EagleProposer(drafter, TREE)
    proposer.commit(torch.randn(6, drafter.target.hidden_size, generator=g), torch.randint(0, 64, (6,), generator=g))
    return proposer.propose(root=3)


def _same_tree(a, b):
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.parents, b.parents)
    assert torch.equal(a.logp, b.logp)


def test_eagle_architecture_has_an_fc_bias_and_no_input_layernorm_in_layer_0(target):
    drafter = Drafter(target, DrafterConfig(architecture="eagle", seed=2))
    names = {n for n, _ in drafter.named_parameters()}
    assert "fc.bias" in names and not any("input_layernorm" in n for n in names)
    assert any("input_layernorm" in n for n, _ in Drafter(target).named_parameters())
    # EAGLE's layer 0: x = fc([e; f]); h = x + attn(x); out = h + mlp(post_norm(h)), x never normed first
    with torch.no_grad():
        drafter.fc.bias.normal_()
        tokens, features = torch.tensor([[1, 2, 3]]), torch.randn(1, 3, target.hidden_size)
        mask = torch.zeros(1, 1, 3, 3).masked_fill(torch.ones(3, 3, dtype=torch.bool).triu(1), float("-inf"))
        positions = torch.arange(3)[None]
        out = drafter(tokens, features, positions, mask)
        layer = drafter.layer.layers[0]
        x = torch.cat([target.embed(tokens), features], -1) @ drafter.fc.weight.T + drafter.fc.bias
        attn, _ = layer.self_attn(x, drafter.layer.rotary_emb(x, positions), mask)
        h = x + attn
        expected = h + layer.mlp(layer.post_attention_layernorm(h))
    assert torch.allclose(out, expected, atol=1e-6)


def test_an_eagle_checkpoint_gives_the_same_draft_trees_as_the_same_weights_loaded_natively(target, tmp_path):
    config, weights = _eagle_checkpoint(target)
    native = Drafter(target, DrafterConfig(architecture="eagle"))
    native.load_state_dict({"fc.weight": weights["fc.weight"], "fc.bias": weights["fc.bias"], "d2t": native.d2t,
                            **{f"layer.layers.0.{k}": weights[f"layers.0.{k}"] for k in LAYER}})
    native.save(str(tmp_path / "native"))
    native = Drafter.load(str(tmp_path / "native"), target)
    older = weights | {"layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)}  # a buffer 2023 checkpoints saved
    for pickle in (False, True):  # model.safetensors, or pytorch_model.bin through torch.load(weights_only=True)
        imported = load_eagle(_write(tmp_path / f"eagle-{pickle}", config, older if pickle else weights, pickle),
                              target)
        assert imported.config.architecture == "eagle" and imported.full_vocab
        for seed in range(3):
            _same_tree(_tree(imported, seed), _tree(native, seed))


def test_export_writes_sglang_layout_and_reimports_to_the_same_weights(target, tmp_path):
    d2t = torch.tensor([5, 1, 9, 30, 2, 40, 7, 63])
    drafter = Drafter(target, DrafterConfig(draft_vocab_size=8, seed=4, architecture="eagle"), d2t=d2t)
    with torch.no_grad():
        drafter.fc.bias.normal_()
    out = tmp_path / "export"
    save_eagle(drafter, str(out))
    assert sorted(os.listdir(out)) == sorted([CONFIG, SAFETENSORS, TOKEN_MAP])
    config = json.loads((out / CONFIG).read_text())
    assert config["architectures"] == ["LlamaForCausalLMEagle"] and config["num_hidden_layers"] == 1
    assert config["vocab_size"] == target.vocab_size and config["rope_theta"] == 10000.0
    assert config["bias"] is True and config["tie_word_embeddings"] is False
    assert sorted(load_file(str(out / SAFETENSORS))) == sorted(EAGLE_KEYS)
    assert torch.equal(torch.load(out / TOKEN_MAP, weights_only=True), d2t)
    back = load_eagle(str(out), target)
    assert back.config.draft_vocab_size == 8 and torch.equal(back.d2t, d2t)
    own, theirs = drafter.state_dict(), back.state_dict()
    assert own.keys() == theirs.keys() and all(torch.equal(own[k], theirs[k]) for k in own)
    _same_tree(_tree(back), _tree(drafter))
    save_eagle(drafter, str(out), dtype=torch.bfloat16)  # over an existing export, in the released dtype
    assert load_file(str(out / SAFETENSORS))["fc.weight"].dtype == torch.bfloat16
    assert json.loads((out / CONFIG).read_text())["torch_dtype"] == "bfloat16"


def test_a_hub_id_is_fetched_through_the_hub_cache(target, tmp_path, monkeypatch):
    """A local hub cache (HF_HUB_CACHE layout, offline) stands in for the hub."""
    import huggingface_hub.constants as hub

    config, weights = _eagle_checkpoint(target)
    repo = tmp_path / "cache" / "models--zbeeb--Eagle-Tiny"
    _write(repo / "snapshots" / "abc123", config, weights)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    from_hub = load_eagle("zbeeb/Eagle-Tiny", target)
    _same_tree(_tree(from_hub), _tree(load_eagle(str(repo / "snapshots" / "abc123"), target)))
    with pytest.raises(FileNotFoundError, match="'zbeeb/Missing' is no local directory, and as a hub id it cannot be fetched"):
        load_eagle("zbeeb/Missing", target)


def test_a_checkpoint_for_another_target_or_layout_is_refused(target, tmp_path):
    config, weights = _eagle_checkpoint(target)
    other = tiny_target(seed=1)  # same shapes, another embedding
    with pytest.raises(ValueError, match="trained with another embedding"):
        load_eagle(_write(tmp_path / "a", config, weights), other)
    with pytest.raises(ValueError, match="vocab_size: 64 != 32"):
        load_eagle(_write(tmp_path / "b", config, weights), tiny_target(vocab=32))
    with pytest.raises(ValueError, match="rope_theta: 500000.0 != 10000.0"):
        load_eagle(_write(tmp_path / "c", config | {"rope_theta": 500000.0}, weights), target)
    with pytest.raises(ValueError, match="'lm_head.weight', which is not in EAGLE's layout"):
        load_eagle(_write(tmp_path / "d", config, weights | {"lm_head.weight": torch.zeros(64, 64)}), target)
    with pytest.raises(ValueError, match="missing"):
        load_eagle(_write(tmp_path / "e", config, {k: v for k, v in weights.items() if "mlp" not in k}), target)
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor pytorch_model.bin"):
        os.makedirs(tmp_path / "f")
        (tmp_path / "f" / CONFIG).write_text(json.dumps(config))
        load_eagle(str(tmp_path / "f"), target)
    bigger = weights | {"fc.weight": torch.zeros(64, 256)}  # no config.json to compare: the shapes still are
    directory = _write(tmp_path / "g", config, bigger)
    os.remove(os.path.join(directory, CONFIG))
    with pytest.raises(ValueError, match="(?s)does not fit target 'tiny-llama-0'.*fc.weight"):
        load_eagle(directory, target)
    torch.save({"fc.weight": torch.nn.Linear(2, 2)}, tmp_path / "f" / PICKLE)  # a module, not plain tensors
    with pytest.raises(ValueError, match="corrupt or not plain tensors"):
        load_eagle(str(tmp_path / "f"), target)
    with pytest.raises(FileNotFoundError, match="neither a checkpoint directory nor a hub id"):
        load_eagle(str(tmp_path / "nowhere" / "x" / "y"), target)


def test_only_eagle_architecture_llama_drafters_export(target, tmp_path):
    with pytest.raises(ValueError, match="architecture 'eagle'"):
        save_eagle(Drafter(target), str(tmp_path / "x"))
    assert not os.path.exists(tmp_path / "x")
    monkeypatch_type = Drafter(target, DrafterConfig(architecture="eagle"))
    monkeypatch_type.target.config.model_type = "gemma3_text"  # a class attribute, shadowed on this instance
    try:
        with pytest.raises(ValueError, match="takes Llama targets, not 'gemma3_text'"):
            save_eagle(monkeypatch_type, str(tmp_path / "y"))
    finally:
        del monkeypatch_type.target.config.model_type
    assert not os.path.exists(tmp_path / "y")


def test_bias_token_map_and_embedding_dtype_variants(target, tmp_path):
    config, weights = _eagle_checkpoint(target)
    no_bias = {k: v for k, v in weights.items() if k != "fc.bias"}
    with pytest.raises(ValueError, match="missing \\['fc.bias'\\]"):  # config says bias: true, the file has none
        load_eagle(_write(tmp_path / "a", config, no_bias), target)
    zero = load_eagle(_write(tmp_path / "b", config | {"bias": False}, no_bias), target)  # EAGLE's bias: false
    assert torch.equal(zero.fc.bias, torch.zeros(target.hidden_size))
    assert load_eagle(_write(tmp_path / "h", config, {k: v.to(torch.bfloat16) for k, v in weights.items()}), target,
                      dtype="checkpoint").fc.weight.dtype == torch.bfloat16  # stored as released
    half = weights | {EMBED: weights[EMBED].to(torch.bfloat16)}  # an embedding released in bf16 is still the target's
    directory = _write(tmp_path / "c", config, half)
    torch.save([5, 1, 9], os.path.join(directory, TOKEN_MAP))  # SGLang also takes a list
    reduced = load_eagle(directory, target)
    assert reduced.config.draft_vocab_size == 3 and reduced.d2t.tolist() == [5, 1, 9]
    (tmp_path / "c" / TOKEN_MAP).write_bytes(b"not a token map")
    with pytest.raises(ValueError, match="token map .* is corrupt"):
        load_eagle(directory, target)
