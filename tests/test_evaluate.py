"""Evaluation: side-by-side rows, the greedy losslessness check, history from the target's own answers."""

import pytest
import torch

import taps.evaluate
import taps.generate
from taps import EagleProposer, TreeConfig, load_target
from taps.benchmarks import Prompt
from taps.evaluate import EvalConfig, evaluate
from taps.tiny import TinyTargetConfig, build_tiny_target
from taps.tree import children_lists
from conftest import echo_drafter

TEXTS = ["Natalia sold 48 clips in April and half as many in May.", "How many clips did she sell?",
         "Write a short poem about the sea and the sky.", "The answer is 72 because 48 + 24 = 72."] * 20
PROMPTS = [Prompt("custom", "a", ("How many clips did Natalia sell?",)),
           Prompt("custom", "b", ("Write a poem about the sea.", "Make it shorter."))]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tiny") / "target")
    build_tiny_target(TEXTS, out, TinyTargetConfig(vocab_size=300))
    target = load_target(out, device="cpu")
    return target, EagleProposer(echo_drafter(target), TreeConfig(total_tokens=12, depth=3, top_k=3))


def _without_time(rows):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]


def test_greedy_rows_are_consistent_and_identical_to_vanilla(tiny):
    target, proposer = tiny
    rows = evaluate(target, proposer, PROMPTS, EvalConfig(max_new_tokens=20), progress=False)
    assert [(t["prompt"], t["turn"]) for t in rows.turns] == [("a", 0), ("b", 0), ("b", 1)]
    for t in rows.turns:
        cycles = [c for c in rows.cycles if (c["prompt"], c["turn"]) == (t["prompt"], t["turn"])]
        assert t["identical"] and t["new_tokens"] == t["vanilla_new_tokens"]
        assert t["passes"] == len(cycles) and t["new_tokens"] == sum(c["emitted"] for c in cycles)
    assert len(rows.nodes) == sum(c["nodes"] - 1 for c in rows.cycles)


def test_second_turn_is_conditioned_on_the_targets_own_first_answer(tiny, monkeypatch):
    target, proposer = tiny
    seen = []
    real = taps.evaluate.build_turn_prompt
    monkeypatch.setattr(taps.evaluate, "build_turn_prompt", lambda tok, history, turn: (
        seen.append(list(history)), real(tok, history, turn))[1])
    evaluate(target, proposer, PROMPTS[1:], EvalConfig(max_new_tokens=10), progress=False)
    first = taps.generate.vanilla_generate(target, torch.tensor(target.tokenizer(
        real(target.tokenizer, [], PROMPTS[1].turns[0]), add_special_tokens=False).input_ids), 10)
    assert seen[0] == [] and seen[1] == [(PROMPTS[1].turns[0], target.tokenizer.decode(first.tokens,
                                                                                          skip_special_tokens=True))]


def test_sampling_runs_are_reproducible_by_seed(tiny):
    target, proposer = tiny
    config = EvalConfig(temperature=1.0, max_new_tokens=15, seed=3)
    one = evaluate(target, proposer, PROMPTS, config, progress=False)
    two = evaluate(target, proposer, PROMPTS, config, progress=False)
    assert _without_time(one.cycles) == _without_time(two.cycles) and _without_time(one.turns) == _without_time(two.turns)


def test_a_lossy_engine_is_caught_at_temperature_zero(tiny, monkeypatch):
    target, proposer = tiny

    def accept_first_children(tree, logits, temperature, generator):
        children, path = children_lists(tree.parents), [0]
        while children[path[-1]]:
            path.append(children[path[-1]][0])
        return path, int(logits[path[-1]].argmax())

    monkeypatch.setattr(taps.generate, "verify", accept_first_children)
    with pytest.raises(RuntimeError, match="must be lossless"):
        evaluate(target, proposer, PROMPTS, EvalConfig(max_new_tokens=20), progress=False)


@pytest.mark.parametrize("kwargs", [{"temperature": -1.0}, {"max_new_tokens": 0}])
def test_eval_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        EvalConfig(**kwargs)
