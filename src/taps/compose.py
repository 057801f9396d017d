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

- `select-leader` / `select-ucb`: one drafter per cycle, chosen from the acceptance seen so far in
  the turn (each drafter tried `explore` cycles first, in order; then the highest mean acceptance,
  or UCB1 on acceptance scaled to [0, 1]); only the chosen drafter grows a tree. A drafter not
  chosen keeps the accepted context it missed and catches up in one pass when chosen again.
- `select-confidence`: one drafter per cycle, chosen before drafting by each drafter's confidence at
  the root (the probability of its first draft token, `signal="top1"`, or the mass of the top_k
  children the tree's first level holds, `signal="topk"`), or two levels down (`signal="depth2"`: the
  sum of path probabilities, i.e. the expected drafted tokens accepted, of the tree it grows in one
  pass, two levels deep, with the tree's node budget). Every drafter commits the accepted tokens each
  cycle, as in routing, since that pass yields the root's distribution; only the chosen one grows a
  tree, so a cycle costs one pass per drafter (two with depth2) plus one tree's levels, against
  routing's K trees.

In routing and merging every drafter commits the accepted context each step, whichever tree was
chosen, so each keeps its own cache current. Losslessness is the engine's: any tree verified by
`taps.verify` is exact, whatever chose it, as long as the choice looks only at past cycles (so at
T > 0 it never sees the randomness of the cycle it drafts for, and replay stays exact in law: a
cycle's tree depends on the tokens before it alone).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from taps.draft import EagleProposer
from taps.tree import DraftTree, follow, merge_trees, prune, select_top, without_root

SIGNALS = ("confidence", "entropy")
BUDGETS = ("paper", "equal")


def best(scores: Sequence[float]) -> int:
    """Index of the highest score; ties go to the lower index."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


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
    return best(scores)


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

    @property
    def steps(self) -> int:
        """Drafter passes since the last reset, over every drafter (`EagleProposer.steps`)."""
        return sum(p.steps for p in self.proposers)


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


RULES = ("leader", "ucb")


class SelectedProposer(_Ensemble):
    """Drafts with one drafter per cycle, chosen from the drafted tokens accepted so far in the turn.

    A cycle's outcome is read from the next `commit`: the engine commits the root and the accepted
    nodes, so a commit of n rows after a proposal means n - 1 drafted tokens accepted. Every commit is
    kept per drafter until that drafter is chosen, then run in one pass (a snapshot runs them all).
    """

    def __init__(self, proposers: Sequence[EagleProposer], rule: str = "leader", explore: int = 1):
        super().__init__(proposers)
        if rule not in RULES:
            raise ValueError(f"unknown selection rule {rule!r}; known: {', '.join(RULES)}")
        if explore < 1:
            raise ValueError(f"selection needs explore >= 1 (cycles per drafter before choosing), got {explore}")
        self.rule, self.explore = rule, explore
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.pending: list[list[tuple[Tensor, Tensor]]] = [[] for _ in self.proposers]
        self.cycles, self.accepted = [0] * len(self.proposers), [0.0] * len(self.proposers)
        self.chosen: int | None = None

    def commit(self, features: Tensor, next_tokens: Tensor) -> None:
        if self.chosen is not None:  # the outcome of the chosen drafter's tree
            self.cycles[self.chosen] += 1
            self.accepted[self.chosen] += (next_tokens.numel() - 1) / (self.proposers[self.chosen].tree.depth + 1)
            self.chosen = None
        for queue in self.pending:
            queue.append((features, next_tokens))

    def propose(self, root: int) -> DraftTree:
        self.chosen = self.choose()
        self._catch_up(self.chosen)
        return self.proposers[self.chosen].propose(root)

    def choose(self) -> int:
        """The drafter of the next cycle: the first not yet tried `explore` times, else the best by the rule
        (mean acceptance per cycle, as a share of the tree's levels; UCB1 adds sqrt(2 ln N / n)); ties to the
        lower index."""
        untried = [i for i, n in enumerate(self.cycles) if n < self.explore]
        if untried:
            return untried[0]
        total = sum(self.cycles)
        bonus = (lambda n: math.sqrt(2 * math.log(total) / n)) if self.rule == "ucb" else (lambda n: 0.0)
        scores = [a / n + bonus(n) for a, n in zip(self.accepted, self.cycles)]
        return best(scores)

    def _catch_up(self, i: int) -> None:
        """Commit to drafter i, in one pass, the context it missed."""
        if self.pending[i]:
            self.proposers[i].commit(torch.cat([f for f, _ in self.pending[i]]),
                                     torch.cat([t for _, t in self.pending[i]]))
            self.pending[i] = []

    def snapshot(self) -> list:
        for i in range(len(self.proposers)):
            self._catch_up(i)
        return super().snapshot()

    def restore(self, state: list) -> None:
        super().restore(state)
        self.pending = [[] for _ in self.proposers]


PROBES = ("top1", "topk", "depth2")


class ProbedProposer(_Ensemble):
    """Drafts with the drafter most confident at the root: each drafter's commit gives its distribution of
    the root's children for free, so the choice needs no pass of its own (only each drafter's head once more)
    and sees only the context before the cycle. `depth2` looks one level further, at the cost of one pass
    per drafter (the chosen one grows its tree afresh). The probabilities are over each drafter's own draft
    vocabulary: drafters of one target share it; drafters with different vocabularies are compared on
    unequal footing."""

    def __init__(self, proposers: Sequence[EagleProposer], signal: str = "top1"):
        super().__init__(proposers)
        if signal not in PROBES:
            raise ValueError(f"unknown selection signal {signal!r}; known: {', '.join(PROBES)}")
        self.signal = signal

    @torch.no_grad()
    def confidence(self, proposer: EagleProposer, root: int) -> float:
        """The drafter's probability of its first draft token (top1), of the top_k children its tree's first
        level holds (topk), or the sum of path probabilities of its tree two levels deep (depth2)."""
        if self.signal == "depth2":
            return proposer.propose(root, passes=1).confidence[1:].sum().item()
        probs = torch.softmax(proposer.drafter.logits(proposer.last_hidden).float(), -1)
        return probs.topk(1 if self.signal == "top1" else min(proposer.tree.top_k, probs.numel())).values.sum().item()

    def propose(self, root: int) -> DraftTree:
        return self.proposers[best([self.confidence(p, root) for p in self.proposers])].propose(root)


def _single(proposers: Sequence[EagleProposer]) -> EagleProposer:
    if len(proposers) != 1:
        raise ValueError(f"composition 'single' takes exactly 1 drafter, got {len(proposers)}")
    return proposers[0]


COMPOSITIONS: dict[str, Callable[..., object]] = {
    "single": _single,
    "route-confidence": lambda proposers: RoutedProposer(proposers, "confidence"),
    "route-entropy": lambda proposers: RoutedProposer(proposers, "entropy"),
    "merged-tree": lambda proposers, budget="paper", trie=True: MergedProposer(proposers, budget, trie),
    "select-leader": lambda proposers, explore=1: SelectedProposer(proposers, "leader", explore),
    "select-ucb": lambda proposers, explore=1: SelectedProposer(proposers, "ucb", explore),
    "select-confidence": lambda proposers, signal="top1": ProbedProposer(proposers, signal),
}


def compose(name: str, proposers: Sequence[EagleProposer], **options):
    """The composition registered as `name` over `proposers` (options: merged-tree's budget, trie; selection's
    explore; select-confidence's signal)."""
    if name not in COMPOSITIONS:
        raise KeyError(f"unknown composition {name!r}; known: {', '.join(COMPOSITIONS)}")
    return COMPOSITIONS[name](proposers, **options)


def proposers_for(drafters, tree) -> list[EagleProposer]:
    """One EagleProposer per drafter, numbered as `source` 0, 1, ... in the node records."""
    return [EagleProposer(d, tree, source=i) for i, d in enumerate(drafters)]


