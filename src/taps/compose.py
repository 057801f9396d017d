"""Compositions of drafters: one interface (the engine's Proposer), chosen by name from a registry.

- `single`: one drafter (also what an averaged or mixed-data checkpoint is used through).
- `route-confidence` / `route-entropy`: at every decoding step each drafter grows its tree;
  keep the tree whose drafted nodes have the higher mean confidence (exp of cumulative
  log-prob) / the lower mean entropy of the distributions they came from.
- `merged-tree`: all drafters' trees under one shared root, verified in one target pass (the
  tree mask keeps subtrees apart; positions follow depth); the longest accepted path wins.
  `budget="paper"` keeps every drafter's full tree (a pass verifies about K times the nodes, as
  the reference code does); `budget="equal"` keeps the total_tokens - 1 most confident nodes
  of the union, so a pass verifies as many nodes as one drafter's tree. `trie=True` merges
  identical prefixes proposed by several drafters into one node. Without the trie (as the
  reference code verifies), greedy verification follows every sibling holding the target's
  token and keeps the longest path (`taps.verify`); sampling accepts only a token's first
  copy, so at T > 0 the trie can only accept more.

Every drafter commits the accepted context each step, whichever tree was chosen, so each keeps
its own cache current. Losslessness is the engine's: any tree verified by `taps.verify` is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from taps.draft import EagleProposer
from taps.tree import DraftTree, follow, merge_trees, prune, select_top, without_root

SIGNALS = ("confidence", "entropy")
BUDGETS = ("paper", "equal")


def route(trees: Sequence[DraftTree], signal: str) -> int:
    """Index of the tree to keep: highest mean node confidence, or lowest mean node entropy.

    Means are over drafted nodes (the root excluded); ties go to the lower index; a tree with no
    drafted node scores worst.
    """
    if signal not in SIGNALS:
        raise ValueError(f"unknown routing signal {signal!r}; known: {', '.join(SIGNALS)}")
    scores = []
    for tree in trees:
        if len(tree) == 1:
            scores.append(float("-inf"))
        elif signal == "confidence":
            scores.append(tree.confidence[1:].mean().item())
        else:
            scores.append(-tree.entropy[1:].mean().item())
    return max(range(len(trees)), key=lambda i: (scores[i], -i))


def candidate_scores(trees: Sequence[DraftTree], continuation: list[int]) -> dict[str, float]:
    """Each candidate tree's routing signals and, given the target's own continuation (its greedy output, or
    its sample at T > 0: `taps.replay`), the drafted tokens verification would accept from it:
    {confidence_i, entropy_i, accepted_i} (one drafter's tree has no duplicate siblings, so the greedy walk
    and the first-copy walk agree).

    Replay knows the continuation, so it can score the trees routing did not keep: how often a
    signal picks the tree that would have been accepted longer (`taps.figures`).
    """
    scores: dict[str, float] = {}
    for i, tree in enumerate(trees):
        drafted = len(tree) > 1
        scores[f"confidence_{i}"] = tree.confidence[1:].mean().item() if drafted else float("nan")
        scores[f"entropy_{i}"] = tree.entropy[1:].mean().item() if drafted else float("nan")
        scores[f"accepted_{i}"] = len(follow(tree, continuation)) - 1
    return scores


class _Ensemble:
    """Several proposers fed the same accepted context."""

    def __init__(self, proposers: Sequence[EagleProposer]):
        if len(proposers) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 drafters, got {len(proposers)}")
        self.proposers = list(proposers)

    def reset(self) -> None:
        for p in self.proposers:
            p.reset()

    def commit(self, features: Tensor, next_tokens: Tensor) -> None:
        for p in self.proposers:
            p.commit(features, next_tokens)

    def snapshot(self) -> list:
        return [p.snapshot() for p in self.proposers]

    def restore(self, state: list) -> None:
        for p, s in zip(self.proposers, state):
            p.restore(s)


class RoutedProposer(_Ensemble):
    """Keeps, at every step, the tree of the drafter the signal prefers."""

    def __init__(self, proposers: Sequence[EagleProposer], signal: str):
        super().__init__(proposers)
        if signal not in SIGNALS:
            raise ValueError(f"unknown routing signal {signal!r}; known: {', '.join(SIGNALS)}")
        self.signal = signal

    def propose(self, root: int) -> DraftTree:
        self.candidates = [p.propose(root) for p in self.proposers]  # replay scores them all
        return self.candidates[route(self.candidates, self.signal)]


class MergedProposer(_Ensemble):
    """Verifies all drafters' trees at once under a shared root."""

    def __init__(self, proposers: Sequence[EagleProposer], budget: str = "paper", trie: bool = True):
        super().__init__(proposers)
        if budget not in BUDGETS:
            raise ValueError(f"unknown merged-tree budget {budget!r}; known: {', '.join(BUDGETS)}")
        self.budget, self.trie = budget, trie
        self.total_tokens = max(p.tree.total_tokens for p in self.proposers)

    def propose(self, root: int) -> DraftTree:
        merged = merge_trees([p.propose(root) for p in self.proposers], trie=self.trie)
        if self.budget == "paper" or len(merged) <= self.total_tokens:
            return merged
        drafted = without_root(merged)
        return prune(root, drafted, select_top(drafted.logp, self.total_tokens - 1))


def _single(proposers: Sequence[EagleProposer]) -> EagleProposer:
    if len(proposers) != 1:
        raise ValueError(f"composition 'single' takes exactly 1 drafter, got {len(proposers)}")
    return proposers[0]


COMPOSITIONS: dict[str, Callable[..., object]] = {
    "single": _single,
    "route-confidence": lambda proposers: RoutedProposer(proposers, "confidence"),
    "route-entropy": lambda proposers: RoutedProposer(proposers, "entropy"),
    "merged-tree": lambda proposers, budget="paper", trie=True: MergedProposer(proposers, budget, trie),
}


def compose(name: str, proposers: Sequence[EagleProposer], **options):
    """The composition registered as `name` over `proposers` (options: merged-tree's budget, trie)."""
    if name not in COMPOSITIONS:
        raise KeyError(f"unknown composition {name!r}; known: {', '.join(COMPOSITIONS)}")
    return COMPOSITIONS[name](proposers, **options)


def proposers_for(drafters, tree) -> list[EagleProposer]:
    """One EagleProposer per drafter, numbered as `source` 0, 1, ... in the node records."""
    return [EagleProposer(d, tree, source=i) for i, d in enumerate(drafters)]


