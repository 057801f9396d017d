"""Trees sized for the machine: the (total_tokens, depth) that maximise predicted tokens per second.

EAGLE-2 grows candidates level by level (each frontier node's top_k children; the top_k by
cumulative draft log-prob form the next frontier) and keeps the total_tokens - 1 most probable.
For a fixed top_k the candidates at depth <= d do not depend on how deep the tree goes, so the
tree of any (n, d) is the top n - 1, by cumulative log-prob, of the candidates at depth <= d. A
node is accepted when the target's continuation spells its path, whatever else the tree holds.
So one replay of a large tree (N, D, top_k) on development prompts gives, cycle by cycle, what
every smaller tree would have accepted: its nodes of depth <= d ranked by confidence, the first
n - 1 kept (`accepted_by_rank`). As in Sequoia, the acceptance vector is read on the large tree's
cycles: a smaller tree's cycles would start elsewhere, which the estimate ignores.

A pass of tree (n, d) costs the drafter's d levels and the target's verification of n nodes
(`choose_tree` takes both as measured on the machine), and emits 1 + the accepted nodes; the
chosen tree maximises emitted tokens per second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd


def accepted_by_rank(nodes: pd.DataFrame, depth: int) -> np.ndarray:
    """a[r]: the share of cycles whose node of rank r (0: the most confident drafted node) among those at depth
    <= `depth` was accepted. nodes: one row per drafted node (cycle keys, depth, confidence, accepted), as the
    evaluation's node rows; cycles are keyed by every column of (prompt, turn, cycle) present. A cycle with fewer
    ranks than r counts as not accepting at r."""
    keys = [c for c in ("benchmark", "prompt", "turn", "cycle") if c in nodes]
    kept = nodes[nodes.depth <= depth].sort_values([*keys, "confidence"], ascending=[True] * len(keys) + [False],
                                                     kind="stable")
    cycles = kept.groupby(keys, sort=False)
    n_cycles = nodes.groupby(keys).ngroups
    if n_cycles == 0:
        return np.zeros(0)
    rank = cycles.cumcount().to_numpy()
    hits = np.bincount(rank, weights=kept.accepted.to_numpy(float), minlength=int(rank.max(initial=-1)) + 1)
    return hits / n_cycles


def expected_tokens(acceptance: np.ndarray, total_tokens: int) -> float:
    """Tokens a pass emits with a tree of `total_tokens` nodes (root included): 1 + its n - 1 nodes' acceptance."""
    return 1.0 + float(np.sum(acceptance[: max(total_tokens - 1, 0)]))


def choose_tree(acceptance: dict[int, np.ndarray], draft_seconds: Callable[[int], float],
                verify_seconds: Callable[[int], float], sizes: Iterable[int]) -> dict:
    """The (total_tokens, depth) of the most tokens per second, from `acceptance` (depth -> `accepted_by_rank`),
    the drafter's seconds to grow `depth` levels and the target's to verify n nodes: {total_tokens, depth,
    tokens_per_pass, seconds_per_pass, tokens_per_s}. Ties go to the smaller tree (fewer nodes, then shallower)."""
    best = None
    for depth, vector in sorted(acceptance.items()):
        for n in sorted(set(sizes)):
            tokens = expected_tokens(vector, n)
            seconds = (draft_seconds(depth) if n > 1 else 0.0) + verify_seconds(n)  # n = 1: no drafting (vanilla)
            candidate = {"total_tokens": n, "depth": depth, "tokens_per_pass": tokens, "seconds_per_pass": seconds,
                         "tokens_per_s": tokens / seconds}
            if best is None or candidate["tokens_per_s"] > best["tokens_per_s"] + 1e-12:
                best = candidate
    if best is None:
        raise ValueError("choose_tree: no depth or no size to choose from")
    return best


def interpolate(points: dict[int, float]) -> Callable[[int], float]:
    """A cost curve through measured (size, seconds) points: linear between them, flat outside."""
    xs = sorted(points)
    ys = [points[x] for x in xs]
    return lambda n: float(np.interp(n, xs, ys))
