"""taps.aggregate on hand-made raw rows: per-prompt, per-depth, node-sample and routing frames."""

import pandas as pd
import pytest

from taps.aggregate import Evaluation, aggregate, depth_rows, node_sample, prompt_rows, replay_error, routing_rows

KEY = {"target": "t", "backbone": "eagle2", "composition": "route", "benchmark": "gsm8k", "temperature": 0.0}


def _evaluation() -> Evaluation:
    turns = pd.DataFrame([{**KEY, "prompt": p, "turn": t, "mode": "replay", "new_tokens": n, "passes": k,
                           "vanilla_new_tokens": n}
                          for p, t, n, k in (("a", 0, 10, 4), ("a", 1, 6, 3), ("b", 0, 9, 3))])
    cycles = pd.DataFrame([{**KEY, "prompt": "a", "turn": 0, "cycle": 0, "accepted": 2, "emitted": 3, "nodes": 4,
                            "drafter": 1},
                           {**KEY, "prompt": "b", "turn": 0, "cycle": 0, "accepted": 0, "emitted": 1, "nodes": 4,
                            "drafter": 0}])
    nodes = pd.DataFrame([{**KEY, "prompt": p, "turn": 0, "cycle": 0, "depth": d, "drafter": s, "accepted": acc,
                           "confidence": 0.5, "entropy": 1.0}
                          for p, d, s, acc in (("a", 1, 1, True), ("a", 1, 1, False), ("a", 2, 1, True),
                                               ("a", 1, 0, False), ("b", 1, 0, False))])
    candidates = pd.DataFrame([{**KEY, "prompt": "a", "turn": 0, "cycle": 0, "confidence_0": 0.2, "confidence_1": 0.4,
                                "entropy_0": 2.0, "entropy_1": 1.0, "accepted_0": 0, "accepted_1": 2}])
    return Evaluation(turns, cycles, nodes, candidates, {"composition": "route-confidence", "drafters": ["math", "chat"]},
                      depth=3)


def test_prompt_rows_sum_a_prompts_turns():
    rows = prompt_rows(_evaluation()).set_index("prompt")
    assert rows.loc["a", ["new_tokens", "passes"]].tolist() == [16, 7] and rows.loc["b", "passes"] == 3
    assert (rows.kind == "route-confidence").all() and (rows.drafters == "math|chat").all()


def test_depth_rows_count_drafted_and_accepted_nodes_per_drafter_and_depth():
    rows = depth_rows(_evaluation()).set_index(["prompt", "drafter_name", "depth"])
    assert rows.loc[("a", "chat", 1), ["drafted", "accepted"]].tolist() == [2, 1]
    assert rows.loc[("a", "chat", 2), ["drafted", "accepted"]].tolist() == [1, 1]
    assert rows.loc[("a", "math", 1), ["drafted", "accepted"]].tolist() == [1, 0]
    assert len(rows) == 4 and rows.reached.isna().all()  # conditional step counts: single drafters only
    single = _evaluation()
    single.spec = {"composition": "single", "drafters": ["math"]}
    single.nodes["drafter"] = 0
    steps = depth_rows(single).set_index(["prompt", "depth"])
    # prompt a: one cycle accepting 2 -> reached/passed step 1: 1/1, step 2: 1/1, step 3: 1/0
    assert steps.loc[("a", 1), ["reached", "passed"]].tolist() == [1, 1]
    assert steps.loc[("b", 1), ["reached", "passed"]].tolist() == [1, 0]  # prompt b accepted 0


def test_node_sample_is_bounded_seeded_and_named():
    ev = _evaluation()
    one, two = node_sample(ev, limit=3, seed=1), node_sample(ev, limit=3, seed=1)
    assert len(one) == 3 and one.equals(two) and set(one.drafter_name) <= {"math", "chat"}
    assert len(node_sample(ev, limit=100)) == 5


def test_routing_rows_carry_the_tree_kept():
    rows = routing_rows(_evaluation())
    assert rows.chosen.tolist() == [1] and rows.accepted_1.tolist() == [2] and rows.drafters.tolist() == ["math|chat"]


def test_routing_rows_count_the_reference_tokens_left_at_each_cycle():
    ev = _evaluation()
    # turn a/1: a 7-token reference (vanilla_new_tokens 6, plus the prefill's token); its cycles, listed out of
    # order, emit 3, 2 and 1 tokens, so 1, 4 and 6 tokens were generated before cycles 0, 1 and 2
    more = [{**KEY, "prompt": "a", "turn": 1, "cycle": c, "accepted": e - 1, "emitted": e, "nodes": 4, "drafter": 0}
            for c, e in ((2, 1), (0, 3), (1, 2))]
    ev.cycles = pd.concat([ev.cycles, pd.DataFrame(more)], ignore_index=True)
    ev.candidates = pd.concat([ev.candidates, pd.DataFrame(
        [{**KEY, "prompt": "a", "turn": 1, "cycle": c, "confidence_0": 0.5, "confidence_1": 0.4, "entropy_0": 1.0,
          "entropy_1": 2.0, "accepted_0": a, "accepted_1": 0} for c, a in ((1, 1), (0, 2), (2, 0))])],
        ignore_index=True)
    rows = routing_rows(ev).set_index(["prompt", "turn", "cycle"])
    assert rows.loc[("a", 0, 0), "remaining"] == 10  # 11 reference tokens, the prefill's already out
    assert [rows.loc[("a", 1, c), "remaining"] for c in range(3)] == [6, 3, 1]
    assert (rows.levels == 3).all() and rows.loc[("a", 1, 1), "accepted_0"] == 1


def test_replay_error_pools_timed_turns_and_resamples_prompts():
    replay = pd.DataFrame({"new_tokens": [10, 20], "passes": [5, 10], "replay_new_tokens": [10, 20],
                           "replay_passes": [5, 8], "replay_matches": [True, False]})
    err = replay_error(replay)
    assert (err["turns"], err["differing"]) == (2, 1) and err["diff"] == pytest.approx(2.0 - 30 / 13)
    assert err["low"] <= err["diff"] <= err["high"]
    assert replay_error(pd.DataFrame())["turns"] == 0
    # two compositions timed on one prompt: one unit, so the CI collapses on the point
    one = replay.assign(target="t", benchmark="gsm8k", prompt="p1")
    err = replay_error(one)
    assert (err["turns"], err["prompts"]) == (2, 1) and err["low"] == err["high"] == pytest.approx(err["diff"])


def test_a_directory_that_is_not_an_evaluation_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an evaluation directory"):
        aggregate([str(tmp_path)])
