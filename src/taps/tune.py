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
(`choose_tree` takes both as measured on the machine by `measure_costs`), and emits 1 + the
accepted nodes; the chosen tree maximises emitted tokens per second. Rule tune_tree does this for
a drafter on development prompts of its own source (never trained on, never test prompts), and
the evaluation's compositions with `tree: tuned` use the tree it chose.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from tqdm import tqdm

from taps.draft import EagleProposer
from taps.drafter import Drafter
from taps.generate import SharedPrefix, StopStrings, commit_prompt, run_prompt, vanilla_generate
from taps.replay import replay_generate
from taps.target import TargetModel
from taps.tree import TreeConfig


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


# ---------------------------------------------------------------- costs measured on the machine


def _median_seconds(fn: Callable[[], object], repeats: int, undo: Callable[[], object] = lambda: None) -> float:
    """Median seconds of fn() over `repeats` calls after a warm-up; undo() runs untimed after each call."""
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        undo()
    return statistics.median(times[1:])


@torch.no_grad()
def measure_costs(target: TargetModel, proposer: EagleProposer, prompt: Tensor, sizes: Iterable[int],
                  depths: Iterable[int], repeats: int = 5) -> dict[str, dict[int, float]]:
    """Seconds of one pass's parts on this machine after `prompt` ([L] ids), medians of `repeats`:
    'draft' {depth: growing a tree of that depth, plus committing 3 accepted tokens}; 'verify' {n: the target
    over an n-node tree (the shape the proposer grows) with the logits of its first rows, the cache cut back}."""
    cache, features = run_prompt(target, prompt)
    root = int(target.logits(features[-1]).argmax())
    proposer.reset()
    commit_prompt(proposer, features, torch.cat([prompt[1:], torch.tensor([root])]), prompt)
    tree_config, state = proposer.tree, proposer.snapshot()

    commit = _median_seconds(lambda: proposer.commit(features[-3:], prompt[-3:]), repeats,
                             lambda: proposer.restore(state))
    draft = {}
    for d in sorted(set(depths)):
        proposer.tree = TreeConfig(tree_config.total_tokens, d, tree_config.top_k)
        draft[d] = _median_seconds(lambda: proposer.propose(root), repeats) + commit
    verify = {}
    proposer.tree = TreeConfig(max(sizes), max(depths), tree_config.top_k)
    shape = proposer.propose(root)
    for n in sorted(set(sizes)):
        tokens, parents = shape.tokens[:n], shape.parents[:n]  # parents come before children: a tree of n nodes

        def verify_pass():
            target.logits(target.forward(tokens, parents, cache)[: min(n, 4)])

        verify[n] = _median_seconds(verify_pass, repeats, lambda: cache.crop(-n))
    proposer.tree = tree_config
    proposer.restore(state)
    return {"draft": draft, "verify": verify}


# ---------------------------------------------------------------- the tree for a drafter


@dataclass(frozen=True)
class TuneConfig:
    """What rule tune_tree searches, and on what."""

    dev_prompts: int = 8  # development prompts of the drafter's source (`taps.answers.development_prompts`)
    max_new_tokens: int = 64  # per development prompt, as the evaluation's turns
    sizes: tuple[int, ...] = (1, 4, 8, 12, 16, 24, 32, 48, 60)  # total_tokens tried (1: vanilla decoding)
    depths: tuple[int, ...] = (1, 2, 3, 4, 5)  # TreeConfig.depth tried (a tree of depth d has d + 1 levels)
    top_k: int = 10  # fixed, as the paper's tree
    repeats: int = 5  # timings per cost point (medians)

    def __post_init__(self) -> None:
        if min(self.sizes, default=0) < 1 or min(self.depths, default=-1) < 0 or min(
                self.dev_prompts, self.max_new_tokens, self.top_k, self.repeats) < 1:
            raise ValueError(f"TuneConfig: sizes >= 1, depths >= 0 (both non-empty), and dev_prompts, "
                             f"max_new_tokens, top_k, repeats >= 1; got {self}")


@torch.no_grad()
def tune_tree(target: TargetModel, drafter: Drafter, prompts: list[Tensor], config: TuneConfig,
              stop: StopStrings | None = None, prefix: SharedPrefix | None = None) -> dict:
    """The (total_tokens, depth) of the most predicted tokens/s for `drafter` on this machine: each development
    prompt's greedy output replayed once with every candidate the deepest tree grows (`accepted_by_rank`), the
    costs measured by `measure_costs` on the first prompt. Returns {tree, predicted, acceptance, costs}."""
    deepest = max(config.depths)
    every = 1 + config.top_k + deepest * config.top_k ** 2  # the root and every candidate: nothing reranked away
    proposer = EagleProposer(drafter, TreeConfig(every, deepest, config.top_k))
    nodes = []
    for i, ids in enumerate(tqdm(prompts, desc="development prompts", unit="prompt")):
        reference = vanilla_generate(target, ids, config.max_new_tokens, stop=stop, prefix=prefix).tokens
        out = replay_generate(target, proposer, ids, reference, config.max_new_tokens, stop=stop, prefix=prefix)
        nodes += [{"prompt": i, **n} for n in out.nodes]
    frame = pd.DataFrame(nodes)
    acceptance = {d: accepted_by_rank(frame, d + 1) for d in config.depths}  # depth d: node depths 1 .. d + 1
    costs = measure_costs(target, proposer, prompts[0], config.sizes, config.depths, config.repeats)
    best = choose_tree(acceptance, interpolate(costs["draft"]), interpolate(costs["verify"]), config.sizes)
    return {"tree": {"total_tokens": best["total_tokens"], "depth": best["depth"], "top_k": config.top_k},
            "predicted": best, "acceptance": {d: v.tolist() for d, v in acceptance.items()}, "costs": costs,
            "prompts": len(prompts), "cycles": int(frame.groupby(["prompt", "cycle"]).ngroups) if len(frame) else 0}
