"""Decoding loops on the target adapter: speculative (draft, verify, accept, compact) and vanilla.

Both loops share the adapter, the sampler and the record format, so the vanilla loop is the
exact baseline: same model calls, one token per target pass. Each loop returns the generated
tokens (the prefill's token first) plus raw per-cycle and per-node records, ready to become
Parquet tables. Acceptance length is computed from them in one place: `taps.metrics`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from taps.target import TargetModel
from taps.tree import DraftTree
from taps.verify import sample_token, verify


class Proposer(Protocol):
    """What the speculative loop needs from a drafter or a composition of drafters."""

    def reset(self) -> None: ...

    def commit(self, features: Tensor, next_tokens: Tensor) -> None: ...

    def propose(self, root: int) -> DraftTree: ...


@dataclass
class Generation:
    """Output of one decoding run."""

    tokens: list[int]  # generated ids, prompt excluded; tokens[0] comes from the prefill
    cycles: list[dict] = field(default_factory=list)  # one row per target pass after the prefill
    nodes: list[dict] = field(default_factory=list)  # one row per drafted node (roots excluded)
    prefill_seconds: float = 0.0
    seconds: float = 0.0  # wall time of the whole run, prefill included


class NodeLogits:
    """Target logits of tree nodes, computed only for the rows verification reads (node i -> [V]).

    On this CPU the 262k-row head costs ~80 ms for one row and ~455 ms for 60 (cost_curve.py);
    verification reads one row per accepted depth, so rows are computed on demand.
    """

    def __init__(self, target: TargetModel, features: Tensor):
        self.target, self.features, self.rows = target, features, {}

    def __getitem__(self, i: int) -> Tensor:
        if i not in self.rows:
            self.rows[i] = self.target.logits(self.features[i])
        return self.rows[i]


def chain(n: int) -> Tensor:
    """Parents of a plain sequence of n tokens: [-1, 0, 1, ..., n - 2]."""
    return torch.arange(-1, n - 1)


def cut_new_tokens(tokens: list[int], room: int, eos: set[int]) -> list[int]:
    """Cut new tokens to the room left and just after the first EOS."""
    tokens = tokens[:room]
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[: i + 1]
    return tokens


def _prefill(target: TargetModel, prompt: Tensor, temperature: float, generator):
    cache = target.new_cache()
    features = target.forward(prompt, chain(prompt.numel()), cache)
    return cache, features, sample_token(target.logits(features[-1]), temperature, generator)


@torch.no_grad()
def speculative_generate(
    target: TargetModel,
    proposer: Proposer,
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    eos_token_ids: set[int] | None = None,
) -> Generation:
    """Speculative decoding of `prompt` ([L] ids); lossless w.r.t. the target at any temperature."""
    eos = target.eos_token_ids if eos_token_ids is None else eos_token_ids
    start = time.perf_counter()
    proposer.reset()
    cache, features, root = _prefill(target, prompt, temperature, generator)
    proposer.commit(features, torch.cat([prompt[1:], torch.tensor([root])]))
    out = Generation(tokens=[root], prefill_seconds=time.perf_counter() - start)
    while len(out.tokens) < max_new_tokens and out.tokens[-1] not in eos:
        tick = time.perf_counter()
        tree = proposer.propose(root)
        past = cache.get_seq_length()
        features = target.forward(tree.tokens, tree.parents, cache)
        path, bonus = verify(tree, NodeLogits(target, features), temperature, generator)
        target.compact(cache, past, torch.tensor(path))
        new = tree.tokens[path[1:]].tolist() + [bonus]
        emitted = cut_new_tokens(new, max_new_tokens - len(out.tokens), eos)
        out.tokens += emitted
        record_cycle(out, tree, path, len(emitted), time.perf_counter() - tick)
        if len(emitted) < len(new) or emitted[-1] in eos or len(out.tokens) >= max_new_tokens:
            break
        proposer.commit(features[path], torch.tensor(new))
        root = bonus
    out.seconds = time.perf_counter() - start
    return out


@torch.no_grad()
def vanilla_generate(
    target: TargetModel,
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    eos_token_ids: set[int] | None = None,
) -> Generation:
    """Plain autoregressive decoding on the same adapter: the baseline and the reference output."""
    eos = target.eos_token_ids if eos_token_ids is None else eos_token_ids
    start = time.perf_counter()
    cache, _, token = _prefill(target, prompt, temperature, generator)
    out = Generation(tokens=[token], prefill_seconds=time.perf_counter() - start)
    while len(out.tokens) < max_new_tokens and token not in eos:
        tick = time.perf_counter()
        features = target.forward(torch.tensor([token]), chain(1), cache)
        token = sample_token(target.logits(features[0]), temperature, generator)
        out.tokens.append(token)
        out.cycles.append({"cycle": len(out.cycles), "accepted": 0, "emitted": 1, "nodes": 1,
                           "drafter": -1, "seconds": time.perf_counter() - tick})
    out.seconds = time.perf_counter() - start
    return out


def record_cycle(out: Generation, tree: DraftTree, path: list[int], emitted: int, seconds: float) -> None:
    """Append one cycle row and its drafted-node rows.

    `accepted` counts the drafted tokens that were emitted (a path cut by max_new_tokens or EOS
    counts only up to the cut). `drafter` is the tree's drafter when one drafter grew it (the
    routed choice); for a merged tree, the drafter of the last accepted node (-1 if none).
    """
    cycle, accepted = len(out.cycles), min(len(path) - 1, emitted)
    src = tree.source.tolist()
    sources = set(src[1:])
    drafter = sources.pop() if len(sources) == 1 else src[path[accepted]] if accepted else -1
    out.cycles.append({"cycle": cycle, "accepted": accepted, "emitted": emitted, "nodes": len(tree),
                       "drafter": drafter, "seconds": seconds})
    on_path = set(path[: accepted + 1])
    depths, conf = tree.depths.tolist(), tree.confidence.tolist()
    prob, ent, tokens = tree.prob.tolist(), tree.entropy.tolist(), tree.tokens.tolist()
    for i in range(1, len(tree)):
        out.nodes.append({"cycle": cycle, "node": i, "token": tokens[i], "depth": depths[i], "confidence": conf[i],
                          "prob": prob[i],
                          "entropy": ent[i], "accepted": i in on_path, "drafter": src[i]})
