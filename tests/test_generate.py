"""The keystone: greedy speculative decoding returns exactly the target's own greedy tokens."""

import pytest
import torch

from taps import (Drafter, DrafterConfig, EagleProposer, TreeConfig, acceptance_length, speculative_generate,
                  vanilla_generate)
from conftest import echo_drafter, tiny_target

SHAPES = {
    "default": TreeConfig(),
    "chain": TreeConfig(total_tokens=7, depth=5, top_k=1),
    "wide": TreeConfig(total_tokens=40, depth=1, top_k=20),
    "root-only": TreeConfig(total_tokens=1),
    "depth-0": TreeConfig(total_tokens=10, depth=0, top_k=10),
    "depth-1": TreeConfig(total_tokens=12, depth=1, top_k=4),
    "deep-narrow": TreeConfig(total_tokens=16, depth=8, top_k=2),
}


def _prompts(n, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (int(torch.randint(1, 12, (), generator=g)),), generator=g) for _ in range(n)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_speculative_equals_vanilla_greedy(shape, seed):
    target = tiny_target(seed=seed)
    proposer = EagleProposer(echo_drafter(target), SHAPES[shape])
    taus = []
    for prompt in _prompts(6, target.vocab_size, seed):
        expected = vanilla_generate(target, prompt, 40).tokens
        got = speculative_generate(target, proposer, prompt, 40)
        assert got.tokens == expected
        taus.append(acceptance_length(got.cycles))
    if shape == "root-only":
        assert taus == [1.0] * len(taus)
    else:  # the drafter must really get drafts accepted, or the test would prove little
        assert sum(taus) / len(taus) > 1.5


def test_untrained_and_reduced_vocabulary_drafters_are_exact(target):
    for drafter in (Drafter(target, DrafterConfig(seed=4)),
                    echo_drafter(target, DrafterConfig(draft_vocab_size=16), d2t=torch.arange(0, 64, 4))):
        proposer = EagleProposer(drafter, TreeConfig(total_tokens=20, depth=3, top_k=4))
        for prompt in _prompts(4, target.vocab_size, seed=2):
            assert speculative_generate(target, proposer, prompt, 30).tokens == vanilla_generate(target, prompt, 30).tokens


def test_max_new_tokens_cut_inside_an_accepted_path(target, drafter):
    proposer = EagleProposer(drafter, TreeConfig())
    prompt = torch.tensor([3, 1, 4, 1, 5])
    reference = vanilla_generate(target, prompt, 40).tokens
    cut_mid_path = 0
    for n in range(1, 30):
        got = speculative_generate(target, proposer, prompt, n)
        assert got.tokens == reference[:n]
        if got.cycles and got.cycles[-1]["emitted"] < got.cycles[-1]["accepted"] + 1:
            cut_mid_path += 1
    assert cut_mid_path > 0


def test_eos_inside_an_accepted_path_stops_there(target, drafter):
    proposer = EagleProposer(drafter, TreeConfig())
    prompt = torch.tensor([2, 7, 1, 8])
    free = speculative_generate(target, proposer, prompt, 60, eos_token_ids=set())
    # pick an EOS that the drafter got accepted in the middle of a multi-token cycle
    position, cut = 1, None
    for cycle in free.cycles:
        if cycle["accepted"] >= 2:
            candidate = free.tokens[position + 1]  # second token of this cycle: inside the accepted path
            if candidate not in free.tokens[: position + 1]:
                cut = candidate
                break
        position += cycle["emitted"]
    assert cut is not None, "fixture produced no multi-token cycle to put an EOS in"
    expected = vanilla_generate(target, prompt, 60, eos_token_ids={cut}).tokens
    got = speculative_generate(target, proposer, prompt, 60, eos_token_ids={cut})
    assert got.tokens == expected and got.tokens[-1] == cut
    assert got.cycles[-1]["emitted"] < got.cycles[-1]["accepted"] + 1


def test_records_count_what_was_emitted(target, drafter):
    proposer = EagleProposer(drafter, TreeConfig(total_tokens=30, depth=4, top_k=5))
    got = speculative_generate(target, proposer, torch.tensor([9, 9, 2]), 50)
    assert sum(c["emitted"] for c in got.cycles) == len(got.tokens) - 1  # prefill token not counted
    assert acceptance_length(got.cycles) == (len(got.tokens) - 1) / len(got.cycles)
    for cycle in got.cycles:
        nodes = [n for n in got.nodes if n["cycle"] == cycle["cycle"]]
        assert len(nodes) == cycle["nodes"] - 1 == 29
        assert sum(n["accepted"] for n in nodes) == cycle["accepted"]
        assert all(0 < n["confidence"] <= 1 and 0 < n["prob"] <= 1 and n["entropy"] >= 0 for n in nodes)
    vanilla = vanilla_generate(target, torch.tensor([9, 9, 2]), 50)
    assert acceptance_length(vanilla.cycles) == 1.0 and len(vanilla.cycles) == 49


def test_max_new_tokens_one_needs_no_verification_pass(target, drafter):
    got = speculative_generate(target, EagleProposer(drafter), torch.tensor([1, 2]), 1)
    assert got.tokens == vanilla_generate(target, torch.tensor([1, 2]), 1).tokens and got.cycles == []
