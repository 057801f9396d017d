"""Speculative sampling preserves the target's distribution (chi-square against exact enumeration).

On a 6-token vocabulary the joint law of the first three generated tokens is enumerated
exactly from the target; speculative sampling must match it (p > 0.01) for several tree
shapes, and a deliberately wrong acceptance rule must fail the very same test.

Replay at T > 0 (`taps.replay`: every tree walked along one vanilla sample) must give the
engine's joint law of tokens and acceptance lengths per cycle: a two-sample chi-square test
between replay and the engine, for single, routed, merged and selected compositions, and the greedy walk
(every copy of a duplicated token followed) must fail it.
"""

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency, chisquare

import taps.generate
from taps import Drafter, DrafterConfig, EagleProposer, TreeConfig, speculative_generate, vanilla_generate
from taps.compose import compose, proposers_for
from taps.replay import replay_generate, sample_features
from taps.tree import children_lists
from taps.verify import target_probs
from conftest import echo_drafter, tiny_target

VOCAB, STEPS, SAMPLES, TEMPERATURE = 6, 3, 1500, 1.0
PROMPT = torch.tensor([1, 4])
SHAPES = {"tree": TreeConfig(total_tokens=10, depth=2, top_k=3), "chain": TreeConfig(total_tokens=4, depth=2, top_k=1)}


@pytest.fixture(scope="module")
def target():
    return tiny_target(vocab=VOCAB, head_scale=2.0)


@pytest.fixture(scope="module")
def exact(target):
    """P(first STEPS tokens = seq) for every seq, from the target's own conditionals."""
    law = {}
    for seq in itertools.product(range(VOCAB), repeat=STEPS):
        ids = torch.cat([PROMPT, torch.tensor(seq)])
        probs = target_probs(target.model(input_ids=ids[None]).logits[0, len(PROMPT) - 1:-1], TEMPERATURE)
        law[seq] = float(np.prod([probs[i, s] for i, s in enumerate(seq)]))
    return law


def _p_value(law, generate):
    generator = torch.Generator().manual_seed(0)
    counts: dict[tuple, int] = {}
    for _ in range(SAMPLES):
        seq = tuple(generate(generator).tokens)
        counts[seq] = counts.get(seq, 0) + 1
    observed, expected, rest_o, rest_e = [], [], 0, 0.0
    for seq, p in law.items():  # cells expected fewer than 5 times are pooled into one
        if p * SAMPLES >= 5:
            observed.append(counts.get(seq, 0))
            expected.append(p * SAMPLES)
        else:
            rest_o, rest_e = rest_o + counts.get(seq, 0), rest_e + p * SAMPLES
    return chisquare(observed + [rest_o], expected + [rest_e]).pvalue


def _speculative(target, shape):
    proposer = EagleProposer(echo_drafter(target), SHAPES[shape])
    return lambda g: speculative_generate(target, proposer, PROMPT, STEPS, TEMPERATURE, g, eos_token_ids=set())


def test_vanilla_sampling_matches_the_exact_law(target, exact):
    assert _p_value(exact, lambda g: vanilla_generate(target, PROMPT, STEPS, TEMPERATURE, g, set())) > 0.01


@pytest.mark.parametrize("shape", SHAPES)
def test_speculative_sampling_matches_the_exact_law(target, exact, shape):
    assert _p_value(exact, _speculative(target, shape)) > 0.01


def _no_residual(tree, logits, temperature, generator):
    """Wrong on purpose: a rejected token keeps its mass, so the bonus over-samples it."""
    tokens, children = tree.tokens.tolist(), children_lists(tree.parents)
    path, p = [0], target_probs(logits[0], temperature)
    while True:
        for child in children[path[-1]]:
            if torch.rand((), generator=generator, dtype=torch.float64) < p[tokens[child]]:
                path.append(child)
                p = target_probs(logits[child], temperature)
                break
        else:
            return path, int(torch.multinomial(p, 1, generator=generator))


def _always_accept_first(tree, logits, temperature, generator):
    """Wrong on purpose: trusts the drafter's first child whenever the target gives it any mass."""
    children = children_lists(tree.parents)
    path = [0]
    while children[path[-1]]:
        path.append(children[path[-1]][0])
    return path, int(torch.multinomial(target_probs(logits[path[-1]], temperature), 1, generator=generator))


@pytest.mark.parametrize("wrong_rule", [_no_residual, _always_accept_first])
def test_a_wrong_acceptance_rule_fails_the_same_test(target, exact, wrong_rule, monkeypatch):
    monkeypatch.setattr(taps.generate, "verify", lambda tree, logits, t, g: wrong_rule(tree, logits, t, g))
    assert _p_value(exact, _speculative(target, "tree")) < 0.01


def _parity(target):
    small = DrafterConfig(draft_vocab_size=VOCAB // 2)
    return [echo_drafter(target, small, d2t=torch.arange(0, VOCAB, 2)), echo_drafter(target, small, d2t=torch.arange(1, VOCAB, 2))]


COMPOSED = {
    # two identical drafters without the trie: every drafted token is proposed twice under the root
    "merged-duplicates": ("merged-tree", {"trie": False}, lambda t: [echo_drafter(t), echo_drafter(t)]),
    "merged-equal-budget": ("merged-tree", {"budget": "equal"}, lambda t: [echo_drafter(t), Drafter(t)]),
    "route-confidence": ("route-confidence", {}, lambda t: [echo_drafter(t), Drafter(t)]),
    # the drafter of a cycle chosen from past cycles' acceptance, which depends on past samples
    "select-leader": ("select-leader", {}, lambda t: [Drafter(t), echo_drafter(t)]),
    # the drafter of a cycle chosen by its confidence at the root, which depends on past samples: echo drafters
    # over the even and the odd tokens (each chosen in over a third of the cycles: 132 and 221 of 353 in 200 runs)
    "select-confidence": ("select-confidence", {}, lambda t: _parity(t)),
    # chosen by the drafters' two-level trees, grown (one pass each) and dropped before the chosen one drafts
    "select-depth2": ("select-confidence", {"signal": "depth2"}, lambda t: _parity(t)),
}  # select-ucb differs from select-leader only in which past acceptance it prefers: the same law


@pytest.mark.parametrize("variant", COMPOSED)
def test_composed_sampling_matches_the_exact_law(target, exact, variant):
    name, options, drafters = COMPOSED[variant]
    proposer = compose(name, proposers_for(drafters(target), SHAPES["tree"]), **options)
    generate = lambda g: speculative_generate(target, proposer, PROMPT, STEPS, TEMPERATURE, g, eos_token_ids=set())
    assert _p_value(exact, generate) > 0.01


REPLAY_SAMPLES = 600  # per side: the greedy walk below fails at p ~ 1e-5, the right one passes at p > 0.5


def _two_sample_p_value(a, b, generator_seeds=(1, 2)):
    """Homogeneity of two samplers' outcomes (chi-square on a 2 x cells table; cells seen fewer than 10 times in
    both samples together are pooled into one)."""
    counts = []
    for sample, seed in zip((a, b), generator_seeds):
        generator, seen = torch.Generator().manual_seed(seed), {}
        for _ in range(REPLAY_SAMPLES):
            outcome = sample(generator)
            seen[outcome] = seen.get(outcome, 0) + 1
        counts.append(seen)
    cells = set(counts[0]) | set(counts[1])
    big = [c for c in cells if counts[0].get(c, 0) + counts[1].get(c, 0) >= 10]
    table = [[seen.get(c, 0) for c in big] + [sum(seen.get(c, 0) for c in cells - set(big))] for seen in counts]
    return chi2_contingency(np.array(table)).pvalue


REPLAYED = {
    "single": ("single", {}, lambda t: [echo_drafter(t)]),
    "route-confidence": ("route-confidence", {}, lambda t: [echo_drafter(t), Drafter(t)]),
    # a random drafter's copies first: a token both propose is accepted from its subtree only (the first copy)
    "merged-duplicates": ("merged-tree", {"trie": False}, lambda t: [Drafter(t), echo_drafter(t)]),
    "select-leader": ("select-leader", {}, lambda t: [Drafter(t), echo_drafter(t)]),
    "select-confidence": ("select-confidence", {}, lambda t: _parity(t)),
    "select-depth2": ("select-confidence", {"signal": "depth2"}, lambda t: _parity(t)),
}


def _engine_and_replay(target, variant, first_copy=True):
    name, options, drafters = REPLAYED[variant]
    proposer = compose(name, proposers_for(drafters(target), SHAPES["tree"]), **options)

    def engine(g):
        out = speculative_generate(target, proposer, PROMPT, STEPS, TEMPERATURE, g, eos_token_ids=set())
        return tuple(out.tokens), tuple(c["accepted"] for c in out.cycles)

    def replay(g):
        sample = vanilla_generate(target, PROMPT, STEPS, TEMPERATURE, g, set()).tokens
        out = replay_generate(target, proposer, PROMPT, sample, STEPS, eos_token_ids=set(), sampled=first_copy,
                              features=sample_features(target, PROMPT, sample))
        assert out.tokens == sample  # replay emits the target's own sample
        return tuple(out.tokens), tuple(c["accepted"] for c in out.cycles)

    return engine, replay


@pytest.mark.parametrize("variant", REPLAYED)
def test_sampled_replay_has_the_engines_law_of_tokens_and_acceptance(target, variant):
    assert _two_sample_p_value(*_engine_and_replay(target, variant)) > 0.01


def test_the_greedy_walk_along_a_sample_fails_the_same_test(target):
    """Following every copy of a duplicated token (right at T=0) accepts what sampling verification rejects."""
    assert _two_sample_p_value(*_engine_and_replay(target, "merged-duplicates", first_copy=False)) < 0.01
