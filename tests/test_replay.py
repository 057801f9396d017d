"""Replay at T=0 gives exactly the engine's records: acceptance lengths, nodes, drafter chosen."""

import math

import pytest
import torch

from taps import EagleProposer, TreeConfig, speculative_generate, vanilla_generate
from taps.compose import compose, proposers_for
from taps.replay import replay_generate
from test_compose import VARIANTS, _drafters
from test_generate import SHAPES, _prompts
from conftest import echo_drafter, tiny_target

NODE_EXACT = ("cycle", "node", "token", "depth", "accepted", "drafter")


def assert_same_records(engine, replay):
    """Cycle rows equal except wall time; node rows equal, their float fields to rounding."""
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert replay.tokens == engine.tokens
    assert strip(replay.cycles) == strip(engine.cycles)
    assert [[n[k] for k in NODE_EXACT] for n in replay.nodes] == [[n[k] for k in NODE_EXACT] for n in engine.nodes]
    for a, b in zip(replay.nodes, engine.nodes):  # features from one pass vs. tree passes: float rounding
        assert all(math.isclose(a[k], b[k], rel_tol=1e-3, abs_tol=1e-4) for k in ("confidence", "prob", "entropy"))


@pytest.mark.parametrize("shape", SHAPES)
def test_replay_equals_the_engine_for_every_tree_shape(shape):
    target = tiny_target(seed=1)
    proposer = EagleProposer(echo_drafter(target), SHAPES[shape])
    accepted = 0
    for prompt in _prompts(4, target.vocab_size, seed=3):
        reference = vanilla_generate(target, prompt, 40).tokens
        engine = speculative_generate(target, proposer, prompt, 40)
        assert_same_records(engine, replay_generate(target, proposer, prompt, reference, 40))
        accepted += sum(c["accepted"] for c in engine.cycles)
    assert accepted > 0 or SHAPES[shape].total_tokens == 1


@pytest.mark.parametrize("name,options", VARIANTS, ids=lambda v: str(v))
def test_replay_equals_the_engine_for_every_composition(target, name, options):
    drafters = _drafters(target)[:1] if name == "single" else _drafters(target)
    proposer = compose(name, proposers_for(drafters, TreeConfig(total_tokens=20, depth=3, top_k=4)), **options)
    chosen = set()
    for prompt in _prompts(4, target.vocab_size, seed=5):
        reference = vanilla_generate(target, prompt, 30).tokens
        engine = speculative_generate(target, proposer, prompt, 30)
        assert_same_records(engine, replay_generate(target, proposer, prompt, reference, 30))
        chosen |= {c["drafter"] for c in engine.cycles if c["accepted"]}
    assert chosen <= {0, 1} and (chosen == {0, 1} if name == "merged-tree" else chosen)  # both win merged cycles


def test_replay_equals_the_engine_when_eos_or_max_new_tokens_cut_a_path(target, drafter):
    proposer = EagleProposer(drafter, TreeConfig())
    prompt = torch.tensor([2, 7, 1, 8])
    free = vanilla_generate(target, prompt, 60, eos_token_ids=set()).tokens
    cut = 0
    for eos in ({free[k]} for k in range(3, 40, 3)):
        reference = vanilla_generate(target, prompt, 60, eos_token_ids=eos).tokens
        engine = speculative_generate(target, proposer, prompt, 60, eos_token_ids=eos)
        assert_same_records(engine, replay_generate(target, proposer, prompt, reference, 60, eos_token_ids=eos))
    for n in range(1, 30):
        reference = vanilla_generate(target, prompt, n).tokens
        engine = speculative_generate(target, proposer, prompt, n)
        assert_same_records(engine, replay_generate(target, proposer, prompt, reference, n))
        cut += bool(engine.cycles) and engine.cycles[-1]["emitted"] == engine.cycles[-1]["accepted"]
    assert cut > 0  # some runs ended inside an accepted path


def test_a_reference_that_is_not_the_targets_greedy_output_is_refused(target, drafter):
    proposer, prompt = EagleProposer(drafter), torch.tensor([3, 1, 4])
    reference = vanilla_generate(target, prompt, 20).tokens
    wrong = reference[:7] + [(reference[7] + 1) % target.vocab_size] + reference[8:]
    with pytest.raises(ValueError, match="token 7 is .* but the target's argmax is"):
        replay_generate(target, proposer, prompt, wrong, 20)
    with pytest.raises(ValueError, match="must end at EOS, at a stop string or at max_new_tokens=20.*does not end"):
        replay_generate(target, proposer, prompt, reference[:15], 20)
    with pytest.raises(ValueError, match=r"max_new_tokens=10, .* ends after token 9 \(length\)"):
        replay_generate(target, proposer, prompt, reference, 10)
    first = reference.index(reference[4])  # an EOS inside the reference
    with pytest.raises(ValueError, match=rf"ends after token {first} \(eos\)"):
        replay_generate(target, proposer, prompt, reference, 20, eos_token_ids={reference[4]})
