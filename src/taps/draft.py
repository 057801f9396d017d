"""Drafting: one drafter's decoding state and the EAGLE-2 dynamic tree it grows.

The proposer keeps the drafter's KV cache over the committed context. Entry i of that cache
is the drafter's input (target feature f_i, token x_{i+1}) at position i; its output predicts
f_{i+1}, whose logits propose x_{i+2}. So after `commit` the last output already gives the
distribution of the root's children. `propose` grows the tree level by level — feed the
frontier, take each node's top_k children, keep the top_k children by cumulative log-prob as
the next frontier — then reranks every candidate and keeps total_tokens - 1 (EAGLE-2). Tree
entries are appended to the drafter's cache while growing and cropped afterwards.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor
from transformers import DynamicCache

from taps.drafter import Drafter
from taps.tree import DraftTree, TreeConfig, additive_mask, prune, root_only, select_top


def entropy(logp: Tensor) -> Tensor:
    """Entropy of each distribution given as log-probs [..., V] -> [...] (0 log 0 = 0)."""
    return -(logp.exp() * logp).nan_to_num().sum(-1)


class EagleProposer:
    """Grows EAGLE-2 draft trees from one drafter, tracking the committed context."""

    def __init__(self, drafter: Drafter, tree: TreeConfig = TreeConfig(), source: int = 0):
        self.drafter = drafter
        self.tree = tree
        self.source = source  # id written on every node this proposer drafts
        self.reset()

    def reset(self) -> None:
        self.cache = DynamicCache()
        self.length = 0  # committed entries in the drafter cache
        self.last_hidden: Tensor | None = None  # [H] predicted feature of the root's position
        self.steps = 0  # drafter passes since the reset (commits and tree levels)

    @torch.no_grad()
    def commit(self, features: Tensor, next_tokens: Tensor) -> None:
        """Append accepted context: features [n, H] of tokens whose successors are next_tokens [n]."""
        n = next_tokens.numel()
        allowed = torch.ones(n, self.length + n, dtype=torch.bool).tril(self.length)
        positions = torch.arange(self.length, self.length + n)
        hidden = self._run(next_tokens, features, positions, allowed)
        self.length += n
        self.last_hidden = hidden[-1]

    def snapshot(self) -> tuple:
        """The committed state (cache, length, last output), to `restore` later in place of re-committing."""
        return copy.deepcopy(self.cache), self.length, self.last_hidden

    def restore(self, state: tuple) -> None:
        cache, self.length, self.last_hidden = state
        self.cache = copy.deepcopy(cache)

    @torch.no_grad()
    def propose(self, root: int, passes: int | None = None) -> DraftTree:
        """Grow the dynamic tree under `root` (the last accepted token): `passes` drafter passes (tree levels
        past the first), the tree's depth unless given; the cache is left as committed."""
        cfg = self.tree
        if cfg.total_tokens == 1:
            return root_only(root)
        logp = torch.log_softmax(self.drafter.logits(self.last_hidden).float(), -1)  # [V_d]
        k = min(cfg.top_k, logp.numel())
        top_lp, top_ix = logp.topk(k)
        # candidate columns, one entry per level appended as tensors (all on the CPU)
        tokens, parents, cum, prob, ent, depth = [top_ix.cpu()], [torch.full((k,), -1)], [top_lp.cpu()], \
            [top_lp.exp().cpu()], [entropy(logp).expand(k).cpu()], [torch.ones(k, dtype=torch.long)]
        frontier = torch.arange(k)  # candidate ids of the nodes to expand next
        parent_hidden = self.last_hidden.expand(k, -1)
        fed: list[int] = []  # candidate ids in drafter-cache order (after the committed entries)
        ancestors: dict[int, list[int]] = {}  # candidate id -> fed slots of its ancestors and itself
        n_cand = k
        for _ in range(cfg.depth if passes is None else passes):
            all_par, all_depth = torch.cat(parents), torch.cat(depth)
            slots = len(fed)
            allowed = torch.zeros(k, self.length + slots + k, dtype=torch.bool)
            allowed[:, : self.length] = True
            for row, c in enumerate(frontier.tolist()):
                p = int(all_par[c])
                ancestors[c] = (ancestors[p] if p >= 0 else []) + [slots + row]
                allowed[row, [self.length + s for s in ancestors[c]]] = True
            positions = self.length - 1 + all_depth[frontier]
            node_tokens = self.drafter.d2t[torch.cat(tokens)[frontier].to(self.drafter.d2t.device)]
            hidden = self._run(node_tokens, parent_hidden, positions, allowed)  # [k, H]
            fed += frontier.tolist()
            lp = torch.log_softmax(self.drafter.logits(hidden).float(), -1)  # [k, V_d]
            c_lp, c_ix = lp.topk(k, dim=-1)  # [k, k]
            c_cum = torch.cat(cum)[frontier][:, None] + c_lp.cpu()  # [k, k]
            tokens.append(c_ix.flatten().cpu())
            parents.append(frontier.repeat_interleave(k))
            cum.append(c_cum.flatten())
            prob.append(c_lp.exp().flatten().cpu())
            ent.append(entropy(lp).cpu().repeat_interleave(k))
            depth.append(all_depth[frontier].repeat_interleave(k) + 1)
            best = select_top(c_cum.flatten(), k)
            frontier = n_cand + best
            parent_hidden = hidden[best // k]
            n_cand += k * k
        self.cache.crop(-len(fed))
        candidates = DraftTree(
            tokens=self.drafter.d2t.cpu()[torch.cat(tokens)], parents=torch.cat(parents), logp=torch.cat(cum),
            prob=torch.cat(prob), entropy=torch.cat(ent), source=torch.full((n_cand,), self.source),
        )
        return prune(root, candidates, select_top(candidates.logp, cfg.total_tokens - 1))

    def _run(self, tokens: Tensor, features: Tensor, positions: Tensor, allowed: Tensor) -> Tensor:
        """One drafter pass over n new entries appended to the cache. allowed: [n, cache + n] bool."""
        self.steps += 1
        device = self.drafter.d2t.device
        hidden = self.drafter(
            tokens.to(device)[None], features.to(device=device, dtype=self.drafter.fc.weight.dtype)[None],
            positions.to(device)[None], additive_mask(allowed, self.drafter.fc.weight.dtype).to(device), self.cache,
        )
        return hidden[0]
