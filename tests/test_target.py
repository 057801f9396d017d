"""The target adapter: exact features for chains and trees, cache compaction, sliding windows."""

import pytest
import torch
from transformers import Gemma3TextConfig, Gemma3ForCausalLM, LlamaForCausalLM

from taps.generate import chain
from taps.target import TargetModel, resolve_target
from taps.tree import leaf_paths
from conftest import tiny_gemma3, tiny_target

#        0
#      /   \
#     1     2
#    / \     \
#   3   4     5
PARENTS = torch.tensor([-1, 0, 0, 1, 1, 2])
TOKENS = torch.tensor([5, 9, 11, 3, 7, 20])


def _chain_features(target, tokens):
    return target.forward(tokens, chain(tokens.numel()), target.new_cache())


def test_chain_logits_equal_the_models_own_forward(target):
    ids = torch.randint(0, target.vocab_size, (12,), generator=torch.Generator().manual_seed(0))
    expected = target.model(input_ids=ids[None]).logits[0]
    assert torch.allclose(target.logits(_chain_features(target, ids)), expected, atol=1e-5)


def test_tree_nodes_see_exactly_their_path(target):
    prompt = torch.tensor([1, 2, 3, 4])
    cache = target.new_cache()
    target.forward(prompt, chain(4), cache)
    tree_features = target.forward(TOKENS, PARENTS, cache)
    for path in leaf_paths(PARENTS).tolist():
        path = [i for i in path if i >= 0]
        expected = _chain_features(target, torch.cat([prompt, TOKENS[path]]))[4:]
        assert torch.allclose(tree_features[path], expected, atol=1e-5), path


def test_compaction_to_a_non_leftmost_path_equals_recomputing(target):
    prompt = torch.tensor([1, 2, 3, 4])
    cache = target.new_cache()
    target.forward(prompt, chain(4), cache)
    target.forward(TOKENS, PARENTS, cache)
    path = [0, 2, 5]  # the right branch: neither the first nodes nor contiguous in the cache
    target.compact(cache, 4, torch.tensor(path))
    assert cache.get_seq_length() == 7
    nxt = torch.tensor([13, 14])
    got = target.logits(target.forward(nxt, chain(2), cache))
    expected = target.logits(_chain_features(target, torch.cat([prompt, TOKENS[path], nxt])))[-2:]
    assert torch.allclose(got, expected, atol=1e-5)


def test_sliding_window_layers_get_their_own_mask():
    target = tiny_gemma3()
    ids = torch.randint(0, 64, (14,), generator=torch.Generator().manual_seed(1))
    expected = target.model(input_ids=ids[None]).logits[0]
    assert torch.allclose(target.logits(_chain_features(target, ids)), expected, atol=1e-4)
    # a tree on top of a past longer than the window: each path equals its own chain
    cache = target.new_cache()
    target.forward(ids, chain(14), cache)
    tree_logits = target.logits(target.forward(TOKENS, PARENTS, cache))
    for path in ([0, 1, 3], [0, 2, 5]):
        full = target.model(input_ids=torch.cat([ids, TOKENS[path]])[None]).logits[0, 14:]
        assert torch.allclose(tree_logits[path], full, atol=1e-4), path


class _ScaledHead(LlamaForCausalLM):
    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 2
        return out


def test_a_head_the_adapter_cannot_reproduce_is_refused(target):
    model = _ScaledHead(target.model.config)
    with pytest.raises(ValueError, match="output head is not supported"):
        TargetModel(model, name="scaled")


def test_a_missing_gguf_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_target(str(tmp_path / "model.gguf"))


def test_fingerprints_tell_targets_apart(target):
    other = tiny_target(seed=1)
    assert target.fingerprint().mismatches(target.fingerprint()) == []
    assert [m.split(":")[0] for m in target.fingerprint().mismatches(other.fingerprint())] == ["embed_digest"]


def _softcapped_gemma(dtype: torch.dtype) -> Gemma3ForCausalLM:
    cfg = Gemma3TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                           num_key_value_heads=1, head_dim=16, vocab_size=64, final_logit_softcapping=2.0,
                           layer_types=["full_attention"], max_position_embeddings=256, initializer_range=0.5,
                           bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    return Gemma3ForCausalLM(cfg).to(dtype)


@pytest.mark.parametrize("family", ["llama", "gemma-softcap"])
def test_fp32_logits_of_a_bf16_target_are_the_fp32_product_of_its_features(family):
    model = tiny_target(dtype=torch.bfloat16).model if family == "llama" else _softcapped_gemma(torch.bfloat16)
    plain, fp32 = TargetModel(model, name="bf16"), TargetModel(model, name="bf16", fp32_logits=True)
    features = _chain_features(fp32, torch.arange(2, 14))  # [12, H] in bf16
    weight, bias = fp32.head()
    expected = torch.nn.functional.linear(features.float(), weight.float(), None if bias is None else bias.float())
    if family == "gemma-softcap":
        assert fp32.softcap == 2.0 and expected.abs().max() > 2.0  # the cap binds
        expected = torch.tanh(expected / 2.0) * 2.0
    got = fp32.logits(features)
    assert features.dtype == torch.bfloat16 and got.dtype == torch.float32
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert plain.logits(features).dtype == torch.bfloat16 and not torch.equal(plain.logits(features).float(), got)
    copy = fp32._head32[1]
    fp32.logits(features[:1])
    assert fp32._head32[1] is copy and copy.dtype == torch.float32  # made once
    # a given head (a drafter's cut of the vocabulary) is used as given, in the model's dtype
    cut = fp32.head(torch.tensor([3, 1, 4]))
    assert torch.equal(fp32.logits(features, cut), plain.logits(features, cut))


def test_fp32_logits_change_nothing_on_an_fp32_target(target):
    fp32 = TargetModel(target.model, name="fp32", fp32_logits=True)
    features = _chain_features(target, torch.arange(2, 14))
    assert torch.equal(fp32.logits(features), target.logits(features))
    assert fp32._fp32_head()[0] is target.lm_head.weight and fp32._head32 is None  # no copy made
