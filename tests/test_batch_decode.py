"""Batched decoding over a shared prefix (taps.batch_decode) equals the vanilla loop, prompt by prompt.

A tiny random Gemma-3 with a sliding window of 4 tokens: prompts and answers run far past the
window, so a mask that counted cache indices (padding included) instead of real positions would
change the tokens. Prompts share a prefix of varied length, or none, or one is a prefix of another.
"""

import pytest
import torch

from taps.batch_decode import _Batch, common_prefix, decode_batch
from taps.generate import chain, vanilla_generate
from conftest import tiny_gemma3

NEW = 12


@pytest.fixture(scope="module")
def target():
    return tiny_gemma3()


def _prompts(shared: int, lengths: list[int], seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(0, 64, (shared,), generator=g).tolist()
    return [prefix + torch.randint(0, 64, (n,), generator=g).tolist() for n in lengths]


def test_common_prefix_leaves_every_row_a_token_of_its_own():
    assert common_prefix([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert common_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2  # one row is a prefix of the other
    assert common_prefix([[7, 1], [8, 1]]) == 0
    assert common_prefix([[1, 2, 3]]) == 2


@pytest.mark.parametrize("prompts", [
    _prompts(9, [1, 5, 3, 8]),  # shared prefix, suffixes of different lengths
    _prompts(0, [6, 2, 9]),  # nothing shared
    _prompts(6, [0, 4])[::-1],  # the second prompt is a prefix of the first
], ids=["shared", "none", "nested"])
def test_batched_decoding_equals_the_vanilla_loop(target, prompts):
    got = decode_batch(target, prompts, NEW)
    for prompt, (tokens, finish) in zip(prompts, got):
        single = vanilla_generate(target, torch.tensor(prompt), NEW)
        assert tokens == single.tokens and finish == single.stopped == "length"


def test_rows_that_stop_leave_the_batch_and_the_rest_go_on(target, monkeypatch):
    prompts = _prompts(7, [3, 1, 6, 2], seed=2)
    free = decode_batch(target, prompts, NEW)
    # an EOS that some answers reach early and others never: rows leave at different steps
    eos = next(t for tokens, _ in free for t in tokens[1:] if sum(t in ts for ts, _ in free) < len(free))
    monkeypatch.setattr(target.model.generation_config, "eos_token_id", eos)
    got = decode_batch(target, prompts, NEW)
    for prompt, (tokens, finish) in zip(prompts, got):
        single = vanilla_generate(target, torch.tensor(prompt), NEW)
        assert tokens == single.tokens and finish == single.stopped
    assert {f for _, f in got} == {"eos", "length"}


def test_each_rows_features_equal_its_own_chain_after_prefill_and_after_steps(target):
    """Finer than tokens: the logits of every row, past the window, equal the prompt's own single pass."""
    prompts = _prompts(9, [1, 5, 3, 8], seed=3)
    batch = _Batch(target, prompts, room=3)  # buffers with room for the 3 steps
    steps = torch.randint(0, 64, (3, len(prompts)), generator=torch.Generator().manual_seed(4))
    got = [target.logits(batch.last)] + [target.logits(batch.step(s)) for s in steps]
    for i, prompt in enumerate(prompts):
        ids = torch.tensor(prompt + steps[:, i].tolist())
        whole = target.logits(target.forward(ids, chain(len(ids)), target.new_cache()))[len(prompt) - 1:]
        assert torch.allclose(torch.stack([g[i] for g in got]), whole, atol=1e-4), i
