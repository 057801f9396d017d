"""Draft trees as plain tensors, and the pure functions over them.

A tree is stored in topological order: node 0 is the root (the last token already accepted,
not yet in the target's cache), and every node's parent has a smaller index. Everything the
engine needs — depths, the ancestor mask, position ids, root-to-leaf paths, the EAGLE-2 rerank —
is a pure function of the `parents` vector, so it can be tested against hand-drawn matrices.
All tree tensors live on the CPU: they are tiny, and Python walks them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TreeConfig:
    """Shape of the EAGLE-2 dynamic draft tree."""

    total_tokens: int = 60  # nodes verified per target pass, root included (so total_tokens - 1 drafts)
    depth: int = 5  # drafter expansions after the root's; the tree has depth + 1 draft levels
    top_k: int = 10  # children kept per expanded node, and width of the frontier

    def __post_init__(self) -> None:
        if self.total_tokens < 1:
            raise ValueError(f"TreeConfig.total_tokens must be >= 1 (the root), got {self.total_tokens}")
        if self.depth < 0:
            raise ValueError(f"TreeConfig.depth must be >= 0, got {self.depth}")
        if self.top_k < 1:
            raise ValueError(f"TreeConfig.top_k must be >= 1, got {self.top_k}")


@dataclass(frozen=True)
class DraftTree:
    """A draft tree; every tensor is [N] on the CPU, node 0 is the root."""

    tokens: Tensor  # target-vocabulary token ids (long)
    parents: Tensor  # parent index, -1 for the root (long)
    logp: Tensor  # cumulative draft log-prob from the root; root 0 (float)
    prob: Tensor  # the node's own draft probability under its parent's distribution; root 1
    entropy: Tensor  # entropy of the draft distribution the node was chosen from; root 0
    source: Tensor  # which drafter proposed the node (0 for a single drafter; root 0)

    def __len__(self) -> int:
        return self.tokens.numel()

    @property
    def confidence(self) -> Tensor:
        """exp(cumulative log-prob): the drafter's probability of the whole root-to-node path."""
        return self.logp.exp()

    @property
    def depths(self) -> Tensor:
        return node_depths(self.parents)


def root_only(token: int) -> DraftTree:
    """The trivial tree: the root alone (one target pass then yields exactly one token)."""
    zero = torch.zeros(1)
    return DraftTree(
        tokens=torch.tensor([token]),
        parents=torch.tensor([-1]),
        logp=zero,
        prob=torch.ones(1),
        entropy=zero.clone(),
        source=torch.zeros(1, dtype=torch.long),
    )


def node_depths(parents: Tensor) -> Tensor:
    """depth[i] = depth[parents[i]] + 1, roots (parent -1) at depth 0. parents: [N] -> [N]."""
    depth = [0] * parents.numel()
    for i, p in enumerate(parents.tolist()):
        depth[i] = 0 if p < 0 else depth[p] + 1
    return torch.tensor(depth, dtype=torch.long)


def ancestor_mask(parents: Tensor) -> Tensor:
    """[N, N] bool: mask[i, j] is True when node j is node i itself or one of its ancestors.

    This is the tree attention mask: a node sees exactly its own root-to-node path.
    """
    n = parents.numel()
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i, p in enumerate(parents.tolist()):
        if p >= 0:
            mask[i] = mask[p]
        mask[i, i] = True
    return mask


def children_lists(parents: Tensor) -> list[list[int]]:
    """children[i] lists node i's children in index order (the order verification tries them)."""
    children: list[list[int]] = [[] for _ in range(parents.numel())]
    for i, p in enumerate(parents.tolist()):
        if p >= 0:
            children[p].append(i)
    return children


def longest_match(tree: DraftTree, want: Callable[[int, int], int | None]) -> list[int]:
    """Longest node path from the root where every step moves to a child holding want(node, depth).

    want(node, depth) is the token the target puts after `node` (at `depth`), or None to stop.
    Every child that holds it is followed, so when several siblings carry the same token (a merged
    tree without the trie) the longest accepted path wins, as a prefix match over all paths does;
    among equally long paths, the first in child order. With distinct siblings this is the single
    greedy walk. want is called at most once per node on a matching path.
    """
    tokens, children = tree.tokens.tolist(), children_lists(tree.parents)
    best, stack = [0], [[0]]
    while stack:
        path = stack.pop()
        if len(path) > len(best):
            best = path
        token = want(path[-1], len(path) - 1)
        stack += [path + [c] for c in reversed(children[path[-1]]) if tokens[c] == token]
    return best


def likely_nodes(tree: DraftTree, node: int, n: int) -> list[int]:
    """`node` and its n - 1 most probable descendants (highest cumulative draft log-prob, ties to
    the lower index), in index order: the rows greedy verification most likely reads next. As a
    child's log-prob never exceeds its parent's, every chosen node's path from `node` is chosen."""
    children, subtree = children_lists(tree.parents), [node]
    for i in subtree:
        subtree += children[i]
    subtree.sort()
    keep = select_top(tree.logp[subtree], n).tolist()
    return [subtree[i] for i in keep]


def follow(tree: DraftTree, continuation: list[int], first_copy: bool = False) -> list[int]:
    """Node path from the root whose tokens spell the longest prefix of `continuation`.

    It is the walk greedy verification makes when `continuation` is the target's own greedy output
    after the root (`longest_match`: every child holding the next token is followed). With
    `first_copy`, only the first child in index order that holds it is: the walk sampling
    verification makes when `continuation` is the target's sample (`taps.replay`), where a token
    proposed twice under one parent is rejected the second time (`taps.verify`).
    """
    if not first_copy:
        return longest_match(tree, lambda node, depth: continuation[depth] if depth < len(continuation) else None)
    tokens, children, path = tree.tokens.tolist(), children_lists(tree.parents), [0]
    while len(path) <= len(continuation):
        step = next((c for c in children[path[-1]] if tokens[c] == continuation[len(path) - 1]), None)
        if step is None:
            break
        path.append(step)
    return path


def leaf_paths(parents: Tensor) -> Tensor:
    """[P, max_depth + 1] long: one row per leaf, its root-to-leaf node indices, padded with -1."""
    children = children_lists(parents)
    par = parents.tolist()
    paths = []
    for leaf in (i for i, c in enumerate(children) if not c):
        path = [leaf]
        while par[path[-1]] >= 0:
            path.append(par[path[-1]])
        paths.append(path[::-1])
    width = max(len(p) for p in paths)
    return torch.tensor([p + [-1] * (width - len(p)) for p in paths], dtype=torch.long)


def position_ids(parents: Tensor, past_len: int) -> Tensor:
    """[N] absolute positions: a node at depth d sits d tokens after the root, which sits at past_len."""
    return past_len + node_depths(parents)


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """[Q, K] bool -> [1, 1, Q, K] float: 0 where attention is allowed, the dtype's min elsewhere.

    Hugging Face attention adds a float mask to the scores; a bool mask is silently misread by
    some attention implementations, so the engine only ever passes this additive form.
    """
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    bias.masked_fill_(~allowed, torch.finfo(dtype).min)
    return bias[None, None]


def select_top(scores: Tensor, n: int) -> Tensor:
    """Indices of the n highest scores, ties broken towards the lower index, returned sorted.

    EAGLE-2's rerank: candidates are created in topological order and a child's cumulative
    log-prob never exceeds its parent's, so with this tie-break the kept set contains every
    kept node's ancestors, and sorting the indices keeps the result topological.
    """
    order = torch.sort(-scores, stable=True).indices  # stable: equal scores keep index order
    return order[:n].sort().values


def without_root(tree: DraftTree) -> DraftTree:
    """The drafted nodes as a forest: the root dropped, parents re-indexed (-1: a root's child)."""
    return DraftTree(tokens=tree.tokens[1:], parents=tree.parents[1:] - 1, logp=tree.logp[1:],
                     prob=tree.prob[1:], entropy=tree.entropy[1:], source=tree.source[1:])


def prune(root_token: int, candidates: DraftTree, keep: Tensor) -> DraftTree:
    """Build the tree `root + candidates[keep]`.

    candidates: a forest in topological order whose parents index candidates (-1 = the root).
    keep: sorted candidate indices, closed under ancestry (as `select_top` returns).
    """
    remap = torch.full((len(candidates),), -1, dtype=torch.long)
    remap[keep] = torch.arange(1, keep.numel() + 1)
    par = candidates.parents[keep]
    new_par = torch.where(par < 0, torch.zeros_like(par), remap[par.clamp(min=0)])
    if (new_par < 0).any():
        raise ValueError("prune: the kept candidates are not closed under ancestry")
    root = root_only(root_token)
    return DraftTree(
        tokens=torch.cat([root.tokens, candidates.tokens[keep]]),
        parents=torch.cat([root.parents, new_par]),
        logp=torch.cat([root.logp, candidates.logp[keep]]),
        prob=torch.cat([root.prob, candidates.prob[keep]]),
        entropy=torch.cat([root.entropy, candidates.entropy[keep]]),
        source=torch.cat([root.source, candidates.source[keep]]),
    )


def merge_trees(trees: list[DraftTree], trie: bool = True) -> DraftTree:
    """Put several trees under one shared root (all trees must share the root token).

    Nodes keep their subtree's order, tree after tree, so the result is topological; a node
    attends only to its own path, so subtrees never see each other. With `trie`, two nodes with
    the same parent and token become one node (which can only lengthen the accepted path); the
    merged node carries the fields of its most confident copy, so a child never outranks its
    parent and `select_top` stays closed under ancestry.
    """
    roots = {int(t.tokens[0]) for t in trees}
    if len(roots) != 1:
        raise ValueError(f"merge_trees: trees have different roots {sorted(roots)}")
    fields = ("tokens", "parents", "logp", "prob", "entropy", "source")
    rows = {f: [getattr(trees[0], f)[0].item()] for f in fields}
    index: dict[tuple[int, int], int] = {}  # (merged parent, token) -> merged node, for the trie
    for tree in trees:
        remap = [0]
        values = {f: getattr(tree, f).tolist() for f in fields}
        for i in range(1, len(tree)):
            parent, token = remap[values["parents"][i]], values["tokens"][i]
            j = index.get((parent, token)) if trie else None
            if j is None:
                j = len(rows["tokens"])
                index[(parent, token)] = j
                for f in fields:
                    rows[f].append(values[f][i])
                rows["parents"][j] = parent
            elif values["logp"][i] > rows["logp"][j]:
                for f in ("logp", "prob", "entropy", "source"):
                    rows[f][j] = values[f][i]
            remap.append(j)
    float_fields = ("logp", "prob", "entropy")
    return DraftTree(**{f: torch.tensor(rows[f], dtype=torch.float32 if f in float_fields else torch.long)
                        for f in fields})
