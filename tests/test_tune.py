"""Sizing trees for the machine: acceptance by rank from node rows, and the chooser against brute force."""

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from taps.draft import EagleProposer
from taps.generate import vanilla_generate
from taps.replay import replay_generate
from taps.tree import TreeConfig
from taps.tune import TuneConfig, accepted_by_rank, choose_tree, expected_tokens, interpolate, measure_costs, tune_tree


def _nodes(cycles):
    """Node rows from [(depths, confidences, accepted), ...] per cycle."""
    rows = []
    for c, (depths, conf, acc) in enumerate(cycles):
        rows += [{"prompt": "p", "turn": 0, "cycle": c, "depth": d, "confidence": x, "accepted": a}
                 for d, x, a in zip(depths, conf, acc)]
    return pd.DataFrame(rows)


def test_acceptance_by_rank_counts_per_cycle_among_the_nodes_of_the_depth():
    nodes = _nodes([([1, 1, 2, 3], [0.9, 0.5, 0.6, 0.4], [True, False, True, True]),  # ranks: a, c, b, d
                    ([1, 2, 2], [0.8, 0.3, 0.7], [False, False, False])])
    assert accepted_by_rank(nodes, depth=3) == pytest.approx([1 / 2, 1 / 2, 0, 1 / 2])
    assert accepted_by_rank(nodes, depth=1) == pytest.approx([1 / 2, 0])  # depth 1 only: 0.9 then 0.5 / 0.8
    assert expected_tokens(accepted_by_rank(nodes, 3), total_tokens=3) == pytest.approx(2.0)
    assert expected_tokens(accepted_by_rank(nodes, 3), total_tokens=1) == 1.0


def _brute_force(cycles, sizes, depths, draft, verify):
    """Build every tree explicitly per cycle (its top n - 1 nodes of depth <= d) and count what it accepts."""
    best = None
    for d, n in itertools.product(depths, sizes):
        emitted = []
        for depth, conf, acc in cycles:
            kept = sorted((i for i in range(len(depth)) if depth[i] <= d), key=lambda i: -conf[i])[: n - 1]
            emitted.append(1 + sum(acc[i] for i in kept))
        rate = np.mean(emitted) / ((draft(d) if n > 1 else 0.0) + verify(n))
        if best is None or rate > best[0] + 1e-12:
            best = (rate, n, d)
    return best


def test_the_chooser_picks_the_tree_brute_force_picks():
    rng = np.random.default_rng(0)
    for trial in range(20):
        cycles = []
        for _ in range(30):
            depth = list(rng.integers(1, 6, 40))
            conf = list(rng.random(40))
            acc = [bool(rng.random() < 0.9 * c / d) for c, d in zip(conf, depth)]
            cycles.append((depth, conf, acc))
        per_node = rng.uniform(0.001, 0.02)
        verify = interpolate({1: 0.08, 16: 0.08 + 15 * per_node, 64: 0.08 + 63 * per_node * 1.5})
        draft = lambda d, level=rng.uniform(0.002, 0.02): level * d  # noqa: E731
        sizes, depths = [1, 4, 8, 16, 24, 32, 48, 64], [1, 2, 3, 4, 5]
        nodes = _nodes(cycles)
        got = choose_tree({d: accepted_by_rank(nodes, d) for d in depths}, draft, verify, sizes)
        rate, n, d = _brute_force(cycles, sizes, depths, draft, verify)
        assert (got["total_tokens"], got["depth"]) == (n, d) and got["tokens_per_s"] == pytest.approx(rate)


def test_cost_curve_interpolates_between_measurements_and_is_flat_outside():
    curve = interpolate({1: 0.1, 60: 0.3})
    assert curve(1) == 0.1 and curve(60) == 0.3 and curve(119) == 0.3 and curve(30.5) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="no depth or no size"):
        choose_tree({}, lambda d: 0.0, curve, [8])


def test_measured_costs_cover_every_point_and_leave_the_proposer_as_it_was(target, drafter):
    proposer = EagleProposer(drafter, TreeConfig(20, 3, 4))
    prompt = torch.arange(1, 12)
    costs = measure_costs(target, proposer, prompt, sizes=[1, 4, 10], depths=[1, 3], repeats=2)
    assert sorted(costs["draft"]) == [1, 3] and sorted(costs["verify"]) == [1, 4, 10]
    assert all(s > 0 for part in costs.values() for s in part.values())
    assert proposer.tree == TreeConfig(20, 3, 4) and proposer.length == len(prompt)  # the prompt stays committed


def test_tuning_reads_the_big_trees_acceptance_and_chooses_within_the_grid(target, drafter):
    """At the big tree (every candidate kept), the acceptance vector gives back the replay's tokens per pass."""
    config = TuneConfig(dev_prompts=3, max_new_tokens=20, sizes=(1, 3, 6, 12), depths=(1, 2), top_k=3, repeats=1)
    prompts = [torch.tensor([5 + i, 9, 17 + i, 3]) for i in range(3)]
    tuned = tune_tree(target, drafter, prompts, config)
    assert tuned["tree"]["total_tokens"] in config.sizes and tuned["tree"]["depth"] in config.depths
    best = tuned["predicted"]
    assert best["tokens_per_pass"] == pytest.approx(expected_tokens(
        np.array(tuned["acceptance"][best["depth"]]), best["total_tokens"]))
    every = 1 + 3 + 2 * 9
    big = EagleProposer(drafter, TreeConfig(every, 2, 3))
    passes = []
    for ids in prompts:
        reference = vanilla_generate(target, ids, 20).tokens
        passes += [1 + c["accepted"] for c in replay_generate(target, big, ids, reference, 20).cycles]
    assert expected_tokens(np.array(tuned["acceptance"][2]), every) == pytest.approx(np.mean(passes))
    assert np.mean(passes) > 1.5  # the echo drafter agrees often: the vectors are not all zero
