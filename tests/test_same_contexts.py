"""taps.same_contexts on hand-made routing frames whose answers are worked out by hand, and end to end on a
replayed routed run of the tiny target (remaining, levels and uncut against the cycles' own counts)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from taps import Drafter, DrafterConfig, EagleProposer, TreeConfig, load_target
from taps.aggregate import Evaluation, routing_rows
from taps.benchmarks import Prompt
from taps.compose import candidate_scores, compose, route
from taps.evaluate import EvalConfig, evaluate
from taps.metrics import paired_ratio_test
from taps.same_contexts import picks, signal_counts, step_counts, uncut
from taps.tiny import TinyTargetConfig, build_tiny_target
from taps.tree import DraftTree, root_only
from conftest import echo_drafter

RUN = {"target": "t", "backbone": "eagle2", "composition": "route-confidence", "temperature": 0.0}
NAN = float("nan")


def _rows(bench, prompt, cycles):
    """cycles: (confidence pair, entropy pair, accepted pair, remaining); tree levels 3 (uncut: remaining >= 4)."""
    return [{**RUN, "benchmark": bench, "prompt": prompt, "turn": 0, "cycle": c, "confidence_0": conf[0],
             "confidence_1": conf[1], "entropy_0": ent[0], "entropy_1": ent[1], "accepted_0": acc[0],
             "accepted_1": acc[1], "chosen": 0, "remaining": left, "levels": 3, "drafters": "math|chat"}
            for c, (conf, ent, acc, left) in enumerate(cycles)]


def _signal_frame() -> pd.DataFrame:
    return pd.DataFrame(
        _rows("gsm8k", "p1", [((0.6, 0.5), (1.0, 2.0), (3, 1), 20),  # both signals keep 0: 4 | 4 tokens
                              ((0.3, 0.4), (1.0, 2.0), (2, 0), 20),  # confidence 1: 1, entropy 0: 3
                              ((0.5, 0.5), (1.5, 1.5), (1, 3), 20),  # ties keep 0: 2 | 2
                              ((0.1, 0.9), (3.0, 0.1), (0, 3), 3)])  # cut (3 < 4): dropped
        + _rows("gsm8k", "p2", [((NAN, 0.1), (NAN, 3.0), (0, 2), 9),  # tree 0 drafted nothing: both keep 1: 3 | 3
                                ((0.2, 0.9), (0.5, 1.0), (1, 2), 4),  # uncut by exactly 4: confidence 3, entropy 2
                                ((0.9, 0.1), (0.1, 9.0), (3, 0), 2)])  # cut
        + _rows("mt_bench", "q1", [((0.9, 0.1), (2.0, 0.1), (0, 3), 30)]))  # confidence 1, entropy 4


def test_uncut_keeps_cycles_with_room_for_the_longest_path_and_the_bonus_token():
    kept = uncut(_signal_frame())
    assert list(zip(kept.prompt, kept.cycle)) == [("p1", 0), ("p1", 1), ("p1", 2), ("p2", 0), ("p2", 1), ("q1", 0)]


def test_confidence_and_entropy_picks_on_the_same_cycles():
    pc = signal_counts(_signal_frame())
    # gsm8k: confidence (4 + 1 + 2) + (3 + 3) = 13 tokens over 5 uncut cycles, entropy (4 + 3 + 2) + (3 + 2) = 14
    assert pc.numerators[("confidence", "gsm8k")].tolist() == [7, 6]
    assert pc.numerators[("entropy", "gsm8k")].tolist() == [9, 5]
    assert pc.denominators[("confidence", "gsm8k")].tolist() == pc.denominators[("entropy", "gsm8k")].tolist() == [3, 2]
    assert pc.ratios[("confidence", "gsm8k")] == pytest.approx(2.6) and pc.ratios[("entropy", "gsm8k")] == 2.8
    assert pc.ratios[("confidence", "mt_bench")] == 1.0 and pc.ratios[("entropy", "mt_bench")] == 4.0
    assert pc.value == pytest.approx(((2.6 - 2.8) + (1 - 4)) / 2) and pc.cycles == 6
    assert pc.strata == {("confidence", "gsm8k"): "gsm8k", ("entropy", "gsm8k"): "gsm8k",
                         ("confidence", "mt_bench"): "mt_bench", ("entropy", "mt_bench"): "mt_bench"}
    value, low, high, p = paired_ratio_test(*pc.args, n_boot=200, seed=0)
    assert value == pytest.approx(pc.value) and low <= value <= high and 0 <= p <= 1


def _tree(confidences, entropies, tokens):
    """A chain of drafted nodes under root 0 (tokens 1, 2, ...), or the root alone."""
    if not confidences:
        return root_only(0)
    n = len(confidences) + 1
    return DraftTree(tokens=torch.tensor([0, *tokens]), parents=torch.arange(-1, n - 1),
                     logp=torch.tensor([0.0, *np.log(confidences)]), prob=torch.ones(n),
                     entropy=torch.tensor([0.0, *entropies]), source=torch.zeros(n, dtype=torch.long))


def test_picks_are_the_trees_compose_route_keeps():
    pairs = [(_tree([0.6], [1.0], [1]), _tree([0.5, 0.2], [0.5, 0.5], [1, 2])),  # the signals disagree
             (_tree([0.5], [1.5], [1]), _tree([0.5], [1.5], [3])),  # ties: tree 0
             (root_only(0), _tree([0.01], [9.0], [4])),  # nothing drafted scores worst
             (root_only(0), root_only(0)),
             (_tree([0.25, 0.125], [0.5, 0.25], [1, 2]), _tree([0.2], [0.1], [1]))]
    rows = pd.DataFrame([candidate_scores(trees, [1, 2, 5]) for trees in pairs])  # as replay writes them
    for signal in ("confidence", "entropy"):
        assert picks(rows, signal).tolist() == [route(trees, signal) for trees in pairs]
    assert picks(rows, "confidence").tolist() == [0, 0, 1, 0, 1] and picks(rows, "entropy").tolist() == [1, 0, 1, 0, 1]
    assert rows.accepted_1.tolist() == [2, 0, 0, 0, 1] and np.isnan(rows.confidence_0[2])
    with pytest.raises(ValueError, match="unknown routing signal"):
        picks(rows, "margin")


def _step_frame() -> pd.DataFrame:
    none = ((0.5, 0.5), (1.0, 1.0))
    return pd.DataFrame(_rows("gsm8k", "p1", [(*none, acc, 10) for acc in ((3, 1), (2, 0), (1, 3), (0, 0))]
                              + [(*none, (3, 3), 2)])  # cut: would reach every step with both
                        + _rows("gsm8k", "p2", [(*none, acc, 10) for acc in ((2, 2), (1, 0), (3, 2))])
                        + _rows("mt_bench", "q1", [(*none, (3, 3), 10)]))


def test_step_rates_are_taken_over_the_same_cycles_for_both_experts():
    pc = step_counts(_step_frame(), "gsm8k", 0, 1, 2)
    # S_1: the 7 uncut gsm8k cycles; expert 0 passes step 1 on 6 of them, expert 1 on 4.
    # S_2 (both accepted >= 1): p1 (3, 1), (1, 3); p2 (2, 2), (3, 2); expert 0 passes step 2 on 3, expert 1 on 3.
    assert pc.denominators[(0, 1, "gsm8k")].tolist() == pc.denominators[(1, 1, "gsm8k")].tolist() == [4, 3]
    assert pc.denominators[(0, 2, "gsm8k")].tolist() == pc.denominators[(1, 2, "gsm8k")].tolist() == [2, 2]
    assert pc.numerators[(0, 1, "gsm8k")].tolist() == [3, 3] and pc.numerators[(1, 1, "gsm8k")].tolist() == [2, 2]
    assert pc.numerators[(0, 2, "gsm8k")].tolist() == [1, 2] and pc.numerators[(1, 2, "gsm8k")].tolist() == [1, 2]
    # [logit 3/4 - logit 3/4] - [logit 6/7 - logit 4/7] = -(log 6 - log 4/3)
    assert pc.value == pytest.approx(-math.log(4.5)) and pc.cycles == 4
    assert set(pc.strata.values()) == {"gsm8k"}
    value, low, high, p = paired_ratio_test(*pc.args, n_boot=200, seed=0)
    assert value == pytest.approx(pc.value) and low <= value <= high and 0 <= p <= 1


def test_a_step_rate_of_zero_is_clipped_before_the_log_odds():
    pc = step_counts(_step_frame(), "gsm8k", 0, 1, 3)
    # S_3 (both accepted >= 2): p2 (2, 2), (3, 2); expert 0 passes on 1 of 2, expert 1 on none -> 0.001
    assert pc.denominators[(1, 3, "gsm8k")].tolist() == [0, 2] and pc.cycles == 2
    assert (pc.ratios[(0, 3, "gsm8k")], pc.ratios[(1, 3, "gsm8k")]) == (0.5, 0.0)
    assert pc.value == pytest.approx((0 - math.log(0.001 / 0.999)) - math.log(4.5))
    swapped = step_counts(_step_frame(), "gsm8k", 1, 0, 3)
    assert swapped.value == pytest.approx(-pc.value)


def test_step_counts_refuse_bad_steps_drafters_and_mixed_runs():
    frame = _step_frame()
    for k in (1, 4):
        with pytest.raises(ValueError, match="step k must lie in 2..3"):
            step_counts(frame, "gsm8k", 0, 1, k)
    with pytest.raises(ValueError, match="two distinct drafters"):
        step_counts(frame, "gsm8k", 0, 0, 2)
    assert step_counts(frame, "humaneval", 0, 1, 2) is None
    mixed = pd.concat([frame, frame.assign(composition="route-entropy")])
    with pytest.raises(ValueError, match="one run"):
        signal_counts(mixed)
    assert signal_counts(frame.assign(remaining=3)) is None


TEXTS = ["Natalia sold 48 clips in April and half as many in May.", "How many clips did she sell?",
         "Write a short poem about the sea and the sky.", "The answer is 72 because 48 + 24 = 72."] * 20


def test_remaining_and_levels_bound_a_replayed_routed_run(tmp_path):
    """On a real routed replay: the last cycle of a turn emits exactly what remains, every tree's acceptance
    is bounded by the remainder, and on uncut cycles the kept tree's accepted + 1 is what the cycle emitted."""
    build_tiny_target(TEXTS, str(tmp_path / "target"), TinyTargetConfig(vocab_size=300))
    target = load_target(str(tmp_path / "target"), device="cpu")
    torch.manual_seed(0)
    tree = TreeConfig(total_tokens=16, depth=2, top_k=3)  # 3 + 9 + 9 candidates: deep nodes kept
    drafters = [echo_drafter(target), Drafter(target, DrafterConfig())]  # a good and a random drafter
    routed = compose("route-confidence", [EagleProposer(d, tree, source=i) for i, d in enumerate(drafters)])
    prompts = [Prompt("custom", "a", ("How many clips did Natalia sell?",)),
               Prompt("custom", "b", ("Write a poem about the sea.", "Make it shorter."))]
    rows = evaluate(target, routed, prompts, EvalConfig(max_new_tokens=24, replay=True, timed_prompts=0),
                    progress=False)
    ev = Evaluation(*(pd.DataFrame(getattr(rows, t)) for t in ("turns", "cycles", "nodes", "candidates")),
                    spec={"composition": "route-confidence", "drafters": ["echo", "random"]}, depth=tree.depth + 1)
    frame = routing_rows(ev).merge(ev.cycles[["prompt", "turn", "cycle", "emitted"]], on=["prompt", "turn", "cycle"])
    assert (frame.levels == 3).all() and ev.nodes.depth.max() == 3  # TreeConfig.depth + 1 levels, all reached
    kept = frame[["accepted_0", "accepted_1"]].to_numpy()[np.arange(len(frame)), frame.chosen]
    assert (frame.chosen == picks(frame, "confidence")).all()
    assert (frame.emitted == np.minimum(kept + 1, frame.remaining)).all()
    assert (frame[["accepted_0", "accepted_1"]].max(axis=1) <= frame.remaining).all()
    last = frame.groupby(["prompt", "turn"]).cycle.transform("max") == frame.cycle
    assert (frame.remaining[last] == frame.emitted[last]).all()
    fine = uncut(frame.assign(benchmark="custom"))
    assert 0 < len(fine) < len(frame) and (fine.emitted == kept[fine.index] + 1).all()
