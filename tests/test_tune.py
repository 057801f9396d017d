"""Sizing trees for the machine: acceptance by rank from node rows, and the chooser against brute force."""

import itertools

import numpy as np
import pandas as pd
import pytest

from taps.tune import accepted_by_rank, choose_tree, expected_tokens, interpolate


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
