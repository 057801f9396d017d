"""The keystone on the real target: google/gemma-3-270m from its PyPI package (marked `gemma`).

An untrained drafter is enough for exactness. The first run converts the packaged GGUF into
a cached safetensors directory (about 90 s); later runs load it in a few seconds.
"""

import os

import pytest
import torch

from taps import Drafter, DrafterConfig, EagleProposer, TreeConfig, load_target, speculative_generate, vanilla_generate
from taps.data import format_conversation
from taps.generate import chain
from taps.replay import replay_generate
from test_replay import assert_same_records

pytestmark = pytest.mark.gemma

PROMPTS = ["What is 12 times 7?", "Write a haiku about the sea.",
           "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
           "How many clips did Natalia sell altogether in April and May?"]


@pytest.fixture(scope="module")
def gemma(one_thread):
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)  # a real model does use every core
    yield load_target("gemma-3-270m", device="cpu")
    torch.set_num_threads(threads)


def _ids(target, text):
    prompt, _ = format_conversation(target.tokenizer, [("user", text)], add_generation_prompt=True)
    return torch.tensor(target.tokenizer(prompt, add_special_tokens=False).input_ids)


def test_gemma_greedy_speculative_equals_vanilla(gemma):
    drafter = Drafter(gemma, DrafterConfig(draft_vocab_size=4096), d2t=torch.arange(4096))
    proposer = EagleProposer(drafter, TreeConfig(total_tokens=24, depth=3, top_k=6))
    for text in PROMPTS:
        ids = _ids(gemma, text)
        assert speculative_generate(gemma, proposer, ids, 20).tokens == vanilla_generate(gemma, ids, 20).tokens


def test_gemma_full_vocabulary_drafter_is_exact(gemma):
    proposer = EagleProposer(Drafter(gemma), TreeConfig(total_tokens=16, depth=2, top_k=4))
    ids = _ids(gemma, PROMPTS[0])
    assert speculative_generate(gemma, proposer, ids, 12).tokens == vanilla_generate(gemma, ids, 12).tokens


def test_gemma_sliding_window_beyond_512_tokens_matches_the_model(gemma):
    ids = torch.randint(10, 20000, (600,), generator=torch.Generator().manual_seed(0))
    expected = gemma.model(input_ids=ids[None], logits_to_keep=4).logits[0]
    cache = gemma.new_cache()
    got = gemma.logits(gemma.forward(ids, chain(600), cache)[-4:])
    assert torch.allclose(got, expected, atol=1e-3, rtol=1e-4)


def _feature_echo_drafter(target):
    """An untrained drafter that mostly passes the target's feature through: it proposes about
    the target's top tokens of the previous position, which Gemma accepts now and then (enough
    to test replay). The small random rest makes its output depend on the token and the context,
    as a trained drafter's does; a pure pass-through would give every tree level the same
    distribution, whose exactly tied candidates (a + b = b + a) only rounding would order."""
    drafter = Drafter(target, DrafterConfig(draft_vocab_size=4096, seed=1), d2t=torch.arange(4096))
    hidden = target.hidden_size
    with torch.no_grad():
        drafter.fc.weight.mul_(0.1)
        drafter.fc.weight[:, hidden:] += torch.eye(hidden)
        for layer in drafter.layer.layers:
            layer.self_attn.o_proj.weight.mul_(0.1)
            layer.mlp.down_proj.weight.mul_(0.1)
    return drafter


def test_gemma_replay_equals_the_engine(gemma):
    proposer = EagleProposer(_feature_echo_drafter(gemma), TreeConfig(total_tokens=24, depth=3, top_k=6))
    accepted = 0
    for text in PROMPTS:
        ids = _ids(gemma, text)
        reference = vanilla_generate(gemma, ids, 24).tokens
        engine = speculative_generate(gemma, proposer, ids, 24)
        assert_same_records(engine, replay_generate(gemma, proposer, ids, reference, 24))
        accepted += sum(c["accepted"] for c in engine.cycles)
    assert accepted > 0


# Two solved GSM8K-train exchanges (the few-shot form the workflow uses), long enough that the
# prompts pass Gemma-3's 512-token sliding window.
EXEMPLARS = [
    ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did "
     "she earn?", "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
     "$<<0.2*50=10>>10.\n#### 10"),
    ("Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. Her "
     "parents decided to give her $15 for that purpose, and her grandparents twice as much as her parents. How "
     "much more money does Betty need to buy the wallet?", "In the beginning, Betty has only 100 / 2 = "
     "$<<100/2=50>>50.\nBetty's grandparents gave her 15 * 2 = $<<15*2=30>>30.\nThis means, Betty needs "
     "100 - 50 - 30 - 15 = $<<100-50-30-15=5>>5 more.\n#### 5"),
] * 2


def test_gemma_batched_regeneration_equals_the_vanilla_loop_with_few_shot_prompts(gemma):
    """Left-padded batched generation (taps.answers) gives the vanilla loop's tokens on the real target,
    stop string included, for few-shot prompts of different lengths past the sliding window."""
    from taps.answers import generate_batch
    from taps.generate import StopStrings
    from taps.prompts import plain_format

    fmt = plain_format(gemma.tokenizer, EXEMPLARS)
    stop = StopStrings(gemma.tokenizer, fmt.stop)
    prompts = []
    for text in PROMPTS:
        rendered, _, _ = fmt.render(gemma.tokenizer, [("user", text)], add_generation_prompt=True)
        prompts.append(gemma.tokenizer(rendered, add_special_tokens=False).input_ids)
    assert min(map(len, prompts)) > 512 and len(set(map(len, prompts))) == len(prompts)
    batched = generate_batch(gemma, prompts, 40, stop=stop)
    for ids, (tokens, finish) in zip(prompts, batched):
        single = vanilla_generate(gemma, torch.tensor(ids), 40, stop=stop)
        assert tokens == single.tokens and finish == single.stopped
