"""Cost curve of the hardware: ms per target pass against tree size, ms per draft step.

    python benchmarks/cost_curve.py [--target gemma-3-270m] [--context 256] [--repeats 5]

A target pass is what verification costs: the body over N tree nodes on top of a cached
context, plus the head for all N nodes. A draft step is one drafter forward over a frontier of
top_k nodes plus its head, for the full and for reduced draft vocabularies. Medians of
`repeats` timings, all measured in this one run, so the ratios are side by side. Run it on an
otherwise idle machine: with two cores, any other process skews every figure.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from taps.draft import EagleProposer
from taps.drafter import Drafter, DrafterConfig
from taps.generate import chain
from taps.target import load_target
from taps.tree import TreeConfig


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def target_pass(target, context: torch.Tensor, n: int, with_head: bool):
    """One verification-shaped pass of n nodes (a top-2 binary-ish tree) after `context`."""
    cache = target.new_cache()
    target.forward(context, chain(context.numel()), cache)
    tokens = torch.randint(10, 1000, (n,))
    parents = torch.tensor([-1] + [(i - 1) // 2 for i in range(1, n)])

    def run():
        features = target.forward(tokens, parents, cache)
        if with_head:
            target.logits(features)
        target.compact(cache, context.numel(), torch.zeros(0, dtype=torch.long))  # drop the nodes again
    return run


def draft_step(target, context: torch.Tensor, vocab: int | None, top_k: int):
    """One frontier expansion: drafter over top_k nodes + log-softmax over its vocabulary."""
    d2t = None if vocab is None else torch.arange(vocab)
    proposer = EagleProposer(Drafter(target, DrafterConfig(draft_vocab_size=vocab), d2t=d2t), TreeConfig())
    features = target.forward(context, chain(context.numel()), target.new_cache())
    proposer.commit(features, context)
    hidden = proposer.last_hidden.expand(top_k, -1)
    nodes = torch.randint(10, 1000, (top_k,))
    positions = torch.full((top_k,), proposer.length)
    allowed = torch.ones(top_k, proposer.length + top_k, dtype=torch.bool)

    def run():
        out = proposer._run(nodes, hidden, positions, allowed)
        torch.log_softmax(proposer.drafter.logits(out).float(), -1).topk(top_k)
        proposer.cache.crop(-top_k)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="gemma-3-270m")
    parser.add_argument("--context", type=int, default=256, help="tokens already in the cache")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    target = load_target(args.target)
    context = torch.randint(10, 1000, (args.context,))
    print(f"target {args.target} on {target.device} ({target.dtype}), {torch.get_num_threads()} threads, "
          f"context {args.context} tokens, median of {args.repeats}")
    print("\nnodes  pass ms (body+head)  body ms  ms/node")
    base = None
    for n in (1, 4, 8, 16, 32, 64):
        full = median_ms(target_pass(target, context, n, True), args.repeats)
        body = median_ms(target_pass(target, context, n, False), args.repeats)
        base = base or full
        print(f"{n:5d}  {full:19.1f}  {body:7.1f}  {full / n:7.1f}   ({full / base:.2f}x one node)")
    print(f"\ndraft step over {args.top_k} frontier nodes")
    for vocab in (None, 32768, 8192, 2048):
        ms = median_ms(draft_step(target, context, vocab, args.top_k), args.repeats)
        print(f"  vocab {vocab or target.vocab_size:7d}: {ms:7.1f} ms")


if __name__ == "__main__":
    main()
