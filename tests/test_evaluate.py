"""Evaluation: side-by-side rows, the greedy losslessness check, history from the target's own answers."""

import math

import pandas as pd
import pytest
import torch

import taps.evaluate
import taps.generate
from taps import Drafter, DrafterConfig, EagleProposer, TreeConfig, load_target, vanilla_generate
from taps.benchmarks import Prompt
from taps.evaluate import EvalConfig, _generator, _ids, evaluate, evaluate_many, reference_rows
from taps.prompts import PromptFormat
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
    monkeypatch.setattr(taps.evaluate, "build_turn_prompt", lambda tok, history, turn, fmt: (
        seen.append(list(history)), real(tok, history, turn, fmt))[1])
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


def _accept_first_children(tree, logits, temperature, generator):
    """A lossy verifier: accepts the first child at every depth, whatever the target says."""
    children, path = children_lists(tree.parents), [0]
    while children[path[-1]]:
        path.append(children[path[-1]][0])
    return path, int(logits[path[-1]].argmax())


def test_a_lossy_engine_is_caught_at_temperature_zero(tiny, monkeypatch):
    target, proposer = tiny
    monkeypatch.setattr(taps.generate, "verify", _accept_first_children)
    with pytest.raises(RuntimeError, match="must be lossless"):
        evaluate(target, proposer, PROMPTS, EvalConfig(max_new_tokens=20), progress=False)


def test_a_greedy_mismatch_is_recorded_and_the_evaluation_goes_on_with_on_mismatch_record(tiny, monkeypatch):
    """The lossy engine above, recorded: every turn is kept, the differing ones say identical False, and
    later turns are still conditioned on the vanilla answer (same prompts and vanilla runs as a lossless run)."""
    from taps.aggregate import Evaluation, evaluation_row
    target, proposer = tiny
    histories, real = [], taps.evaluate.build_turn_prompt
    monkeypatch.setattr(taps.evaluate, "build_turn_prompt", lambda tok, history, turn, fmt: (
        histories.append(list(history)), real(tok, history, turn, fmt))[1])
    lossless = evaluate(target, proposer, PROMPTS, EvalConfig(max_new_tokens=20), progress=False)
    monkeypatch.setattr(taps.generate, "verify", _accept_first_children)
    rows = evaluate(target, proposer, PROMPTS, EvalConfig(max_new_tokens=20, on_mismatch="record"), progress=False)
    assert [(t["prompt"], t["turn"]) for t in rows.turns] == [("a", 0), ("b", 0), ("b", 1)]
    assert histories[3:] == histories[:3] and histories[2]  # prompt b's second turn: the same vanilla answer
    differing = [t for t in rows.turns if not t["identical"]]
    assert rows.turns[1] in differing and all(t["identical"] for t in lossless.turns)
    for t in differing:  # the speculative run's rows are kept
        assert t["passes"] == len([c for c in rows.cycles if (c["prompt"], c["turn"]) == (t["prompt"], t["turn"])]) > 0
    key = {"target": "t", "backbone": "b", "composition": "c", "temperature": 0.0}
    turns = pd.DataFrame([{**key, **t} for t in rows.turns])
    row = evaluation_row(Evaluation(turns, pd.DataFrame(rows.cycles), pd.DataFrame(), pd.DataFrame(),
                                    {"composition": "single", "drafters": ["m"]}, depth=4))
    assert row["identical"] is False and row["mismatched_turns"] == len(differing)
    assert math.isnan(row["reference_mismatched_turns"])  # no replay: no reference was read


def _corrupted(references: list[dict], prompt: str, position: int, target) -> list[dict]:
    """The references with one token of `prompt`'s turn 0 replaced by another (not EOS) token."""
    out = [dict(r) for r in references]
    ref = next(r for r in out if (r["prompt"], r["turn"]) == (prompt, 0))
    tokens = list(ref["tokens"])
    tokens[position] = next(t for t in range(target.vocab_size) if t != tokens[position]
                            and t not in target.eos_token_ids)
    ref["tokens"] = tokens
    return out


def test_a_reference_unlike_the_targets_argmax_is_recorded_in_replay_with_on_mismatch_record(tiny):
    target, proposer = tiny
    config = EvalConfig(max_new_tokens=20, replay=True, timed_prompts=0)
    references = reference_rows(target, PROMPTS, config, progress=False)
    bad = _corrupted(references, "a", 5, target)
    with pytest.raises(ValueError, match="token 5 is .* but the target's argmax is"):
        evaluate(target, proposer, PROMPTS, config, references=bad, progress=False)
    record = EvalConfig(max_new_tokens=20, replay=True, timed_prompts=0, on_mismatch="record")
    rows = evaluate(target, proposer, PROMPTS, record, references=bad, progress=False)
    clean = evaluate(target, proposer, PROMPTS, record, references=references, progress=False)
    assert [t["reference_mismatches"] for t in clean.turns] == [0, 0, 0]
    counts = [t["reference_mismatches"] for t in rows.turns]
    assert counts[0] >= 1 and counts[1:] == [0, 0]
    # the turn is scored against the (corrupted) reference: its tokens, not the target's argmax
    assert rows.turns[0]["new_tokens"] == len(bad[0]["tokens"]) - 1
    assert _without_time(rows.turns[1:]) == _without_time(clean.turns[1:])
    from taps.aggregate import Evaluation, evaluation_row
    key = {"target": "t", "backbone": "b", "composition": "c", "temperature": 0.0}
    row = evaluation_row(Evaluation(pd.DataFrame([{**key, **t} for t in rows.turns]), pd.DataFrame(rows.cycles),
                                    pd.DataFrame(), pd.DataFrame(), {"composition": "single", "drafters": ["m"]},
                                    depth=4))
    assert (row["reference_mismatched_turns"], row["mismatched_turns"], row["timed_turns"]) == (1, 0, 0)


@pytest.mark.parametrize("kwargs", [{"temperature": -1.0}, {"max_new_tokens": 0}, {"on_mismatch": "warn"}])
def test_eval_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        EvalConfig(**kwargs)
    if "on_mismatch" in kwargs:
        with pytest.raises(ValueError, match="must be one of 'error', 'record', got 'warn'"):
            EvalConfig(**kwargs)


def test_replay_gives_the_engines_rows_and_times_only_the_first_prompts(tiny):
    target, proposer = tiny
    engine = evaluate(target, proposer, PROMPTS, EvalConfig(max_new_tokens=20), progress=False)
    references = reference_rows(target, PROMPTS, EvalConfig(max_new_tokens=20), progress=False)
    replayed = evaluate(target, proposer, PROMPTS, EvalConfig(max_new_tokens=20, replay=True, timed_prompts=1),
                        references=references, progress=False)
    assert _without_time(replayed.cycles) == _without_time(engine.cycles)
    assert [n["accepted"] for n in replayed.nodes] == [n["accepted"] for n in engine.nodes]
    assert [(t["prompt"], t["turn"], t["mode"], t["replay_matches"]) for t in replayed.turns] == [
        ("a", 0, "engine", True), ("b", 0, "replay", None), ("b", 1, "replay", None)]
    assert all(math.isnan(t["seconds"]) and math.isnan(t["vanilla_seconds"]) for t in replayed.turns[1:])
    assert [(t["new_tokens"], t["passes"]) for t in replayed.turns] == [(t["new_tokens"], t["passes"])
                                                                        for t in engine.turns]
    # without references, evaluate builds them itself
    assert _without_time(evaluate(target, proposer, PROMPTS, EvalConfig(max_new_tokens=20, replay=True),
                                  progress=False).cycles) == _without_time(engine.cycles)


def test_sampled_replay_walks_every_composition_along_the_turns_one_sample(tiny):
    target, echo = tiny
    other = EagleProposer(Drafter(target, DrafterConfig(seed=1)), TreeConfig(total_tokens=12, depth=3, top_k=3))
    config = EvalConfig(1.0, 16, seed=3, replay=True, timed_prompts=1)
    rows = evaluate_many(target, {"echo": echo, "other": other}, PROMPTS, config, progress=False, timed=["echo"])
    stop = PromptFormat().stop_strings(target.tokenizer)
    for name, ev in rows.items():
        assert [t["mode"] for t in ev.turns] == ["replay"] * 3
        # the records walk the turn's vanilla sample: its length, whichever composition
        sample = vanilla_generate(target, _ids(target.tokenizer, [], PROMPTS[0].turns[0], PromptFormat()), 16, 1.0,
                                  _generator(3, 0, 0), stop=stop)
        assert ev.turns[0]["new_tokens"] == len(sample.tokens) - 1
        assert sum(c["emitted"] for c in ev.cycles if c["prompt"] == "a") == len(sample.tokens) - 1
        # the engine runs only on the timed prompt, for the timed composition: its own counts and timing beside
        timed = [(t["timed"], t["engine_new_tokens"] is not None, math.isnan(t["seconds"])) for t in ev.turns]
        assert timed == ([(True, True, False)] + [(False, False, True)] * 2 if name == "echo" else
                         [(False, False, True)] * 3)
    assert [t["new_tokens"] for t in rows["echo"].turns] == [t["new_tokens"] for t in rows["other"].turns]


def test_references_of_other_prompts_are_refused(tiny):
    target, proposer = tiny
    other = [Prompt("custom", "a", ("Another question entirely?",))]
    references = reference_rows(target, other, EvalConfig(max_new_tokens=8), progress=False)
    config = EvalConfig(max_new_tokens=8, replay=True, timed_prompts=0)
    with pytest.raises(ValueError, match="holds another prompt text for prompt 'a' turn 0"):
        evaluate(target, proposer, PROMPTS, config, references=references, progress=False)
    with pytest.raises(ValueError, match="has no row for prompt 'b' turn 0"):
        evaluate(target, proposer, PROMPTS, config, progress=False,
                 references=reference_rows(target, PROMPTS[:1], EvalConfig(max_new_tokens=8), progress=False))


def test_evaluation_row_times_only_engine_turns_and_measures_replay_error():
    from taps.aggregate import Evaluation, evaluation_row
    key = {"target": "t", "backbone": "eagle2", "composition": "c", "benchmark": "b", "temperature": 0.0}
    nan = float("nan")
    turns = pd.DataFrame([
        {**key, "prompt": "p1", "turn": 0, "mode": "engine", "new_tokens": 20, "passes": 10, "seconds": 2.0,
         "vanilla_new_tokens": 20, "vanilla_seconds": 4.0, "identical": True, "replay_matches": False,
         "replay_new_tokens": 20, "replay_passes": 8},
        {**key, "prompt": "p2", "turn": 0, "mode": "replay", "new_tokens": 30, "passes": 10, "seconds": nan,
         "vanilla_new_tokens": 30, "vanilla_seconds": nan, "identical": None, "replay_matches": None,
         "replay_new_tokens": None, "replay_passes": None},
    ])
    cycles = pd.DataFrame({"prompt": ["p1"] * 4, "accepted": [0, 1, 2, 3], "nodes": [5, 5, 5, 9],
                           "drafter": [0, 1, 1, -1]})
    row = evaluation_row(Evaluation(turns, cycles, pd.DataFrame(), pd.DataFrame(),
                                    {"composition": "merged-tree", "drafters": ["m", "c"]}, depth=3))
    assert (row["prompts"], row["timed_turns"], row["replay_turns"], row["replay_mismatches"]) == (2, 1, 1, 1)
    assert row["tau"] == 2.5 and row["tokens_per_s"] == 10.0 and row["vanilla_tokens_per_s"] == 5.0
    assert row["speedup"] == 2.0 and row["identical"]
    assert row["replay_diff"] == 2.0 - 2.5  # engine 20/10, replay 20/8
    assert (row["accept_d1"], row["accept_d2"], row["accept_d3"]) == (0.75, 2 / 3, 0.5)
    assert row["nodes_per_pass"] == 6.0 and (row["share_0"], row["share_1"]) == (1 / 3, 2 / 3)
    assert (row["kind"], row["drafters"], row["budget"], row["trie"]) == ("merged-tree", "m|c", "paper", True)


def test_a_replay_that_differs_from_the_engine_is_flagged(tiny, monkeypatch):
    target, proposer = tiny
    real = taps.evaluate.replay_generate

    def off_by_one_node(*args, **kwargs):
        out = real(*args, **kwargs)
        out.nodes[0] = {**out.nodes[0], "accepted": not out.nodes[0]["accepted"]}
        return out

    monkeypatch.setattr(taps.evaluate, "replay_generate", off_by_one_node)
    rows = evaluate(target, proposer, PROMPTS, EvalConfig(max_new_tokens=20, replay=True, timed_prompts=2),
                    progress=False)
    assert [t["replay_matches"] for t in rows.turns] == [False, False, False]


def test_many_compositions_in_one_call_give_each_its_own_rows(tiny):
    """evaluate_many shares the vanilla run and replay's features per turn; each composition's rows
    equal those of evaluating it alone, and routed replay scores every candidate tree."""
    from taps.compose import compose
    from taps.evaluate import evaluate_many
    target, proposer = tiny
    tree = TreeConfig(total_tokens=12, depth=3, top_k=3)
    routed = compose("route-confidence", [EagleProposer(echo_drafter(target), tree, source=i) for i in range(2)])
    config = EvalConfig(max_new_tokens=16, replay=True, timed_prompts=1)
    refs = reference_rows(target, PROMPTS, config, progress=False)
    many = evaluate_many(target, {"single": proposer, "routed": routed}, PROMPTS, config, refs, progress=False)
    for name, alone in (("single", proposer), ("routed", routed)):
        one = evaluate(target, alone, PROMPTS, config, refs, progress=False)
        for table in ("cycles", "nodes", "turns", "candidates"):
            assert _without_time(getattr(many[name], table)) == _without_time(getattr(one, table)), (name, table)
    turns = many["routed"].turns
    assert [t["mode"] for t in turns] == ["engine", "replay", "replay"]
    assert turns[0]["replay_matches"] and (turns[0]["replay_new_tokens"], turns[0]["replay_passes"]) == (
        turns[0]["new_tokens"], turns[0]["passes"])
    assert turns[1]["replay_new_tokens"] is None
    assert many["single"].candidates == []
    replayed = [c for c in many["routed"].cycles if c["prompt"] == "b"]
    cands = [c for c in many["routed"].candidates if c["prompt"] == "b"]
    assert len(cands) == len(replayed) > 0
    for cycle, cand in zip(replayed, cands):  # the kept tree's score is the cycle's own (unless cut at the end)
        assert cand["cycle"] == cycle["cycle"] and cycle["drafter"] in (0, 1)
        assert cand[f"accepted_{cycle['drafter']}"] >= cycle["accepted"]
        assert cand["confidence_0"] == cand["confidence_1"]  # twin drafters: the same trees
