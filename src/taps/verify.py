"""Tree verification: which drafted path the target accepts, and the token it adds itself.

Greedy (temperature 0): walk from the root; at each node take the target's argmax and move to
the child holding it, if any. When several siblings hold it (a merged tree without the trie:
two drafters proposed the same token), every one is followed and the longest accepted path
wins, as EAGLE's prefix match over all paths does. The emitted tokens are the target's own
argmax chain, so the output equals plain greedy decoding token for token.

Sampling (temperature > 0), recursive rejection over siblings with point-mass proposals: at a
node whose target distribution is p, try its children x_1, x_2, ... in order. Accept x_i with
probability p(x_i); on rejection set p(x_i) = 0 and renormalise, then try the next child; if
every child is rejected, sample the bonus token from what remains. Why this is lossless: the
first try emits x_1 with probability p(x_1) and otherwise samples from p restricted to
t != x_1, so P(t) = (1 - p(x_1)) * p(t) / (1 - p(x_1)) = p(t) for every t != x_1 — each
try is an exact draw from p, by induction over the siblings and then over depth. This holds
whatever tokens the drafter chose (top-k, deterministic) as long as the choice did not look at
the target's randomness, and a token proposed twice is simply rejected the second time
(its mass is already zero). So at T > 0 a duplicate sibling and its subtree are never
accepted: a merged tree without the trie verifies like one whose duplicate subtrees keep only
the first copy, and the trie (which merges the copies' children) can only accept more.
"""

from __future__ import annotations

import torch
from torch import Tensor

from taps.tree import DraftTree, children_lists, longest_match


def target_probs(logits: Tensor, temperature: float) -> Tensor:
    """softmax(logits / T) in float64 on the CPU: [..., V]."""
    return torch.softmax(logits.double().cpu() / temperature, dim=-1)


def sample_token(logits: Tensor, temperature: float, generator: torch.Generator | None) -> int:
    """One token from a logits row [V]: argmax at T=0, else a draw from softmax(logits / T)."""
    if temperature == 0:
        return int(logits.argmax())
    return int(torch.multinomial(target_probs(logits, temperature), 1, generator=generator))


def verify_greedy(tree: DraftTree, logits: Tensor) -> tuple[list[int], int]:
    """logits[i]: the target's logits [V] at node i (a [N, V] tensor or a lazy row provider).

    Returns (accepted node path from the root, bonus token): the longest path along the target's
    argmax chain (`taps.tree.longest_match`; every child holding the argmax is followed, so
    duplicate siblings of a merged tree without the trie are all tried). Only rows of nodes on
    matching paths are read.
    """
    argmax: dict[int, int] = {}

    def want(node: int, depth: int) -> int:
        if node not in argmax:
            argmax[node] = int(logits[node].argmax())
        return argmax[node]

    path = longest_match(tree, want)
    return path, want(path[-1], len(path) - 1)


def verify_sampling(tree: DraftTree, logits: Tensor, temperature: float,
                    generator: torch.Generator | None) -> tuple[list[int], int]:
    """Recursive rejection sampling over the tree (see the module docstring)."""
    tokens, children = tree.tokens.tolist(), children_lists(tree.parents)
    path = [0]
    p = target_probs(logits[0], temperature)
    while True:
        for child in children[path[-1]]:
            x = tokens[child]
            if torch.rand((), generator=generator, dtype=torch.float64) < p[x]:
                path.append(child)
                p = target_probs(logits[child], temperature)
                break
            p[x] = 0.0
            p /= p.sum()
        else:
            return path, int(torch.multinomial(p, 1, generator=generator))


def verify(tree: DraftTree, logits: Tensor, temperature: float,
           generator: torch.Generator | None) -> tuple[list[int], int]:
    """Dispatch on temperature; logits[i] is node i's target logits row [V]."""
    if temperature == 0:
        return verify_greedy(tree, logits)
    return verify_sampling(tree, logits, temperature, generator)
