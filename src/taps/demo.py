"""Demo: decode one prompt speculatively and with the vanilla loop, side by side.

    taps-demo --prompt "What is 12 times 7?" --max-new-tokens 64

Prints the continuation, then tokens/s and acceptance length of both runs on the same target.
Without --drafter an untrained drafter is used: the output is still exactly the target's
(that is the point of lossless verification), but tau stays near 1 and speculation costs more
than it saves; a trained drafter (the workflow's output) is what makes it faster.
"""

from __future__ import annotations

import argparse

import torch

from taps.data import format_conversation
from taps.draft import EagleProposer
from taps.drafter import Drafter, DrafterConfig
from taps.generate import speculative_generate, vanilla_generate
from taps.metrics import acceptance_length
from taps.target import load_target
from taps.tree import TreeConfig


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="gemma-3-270m", help="packaged name, .gguf file, directory or hub id")
    parser.add_argument("--drafter", help="drafter checkpoint directory (default: an untrained drafter)")
    parser.add_argument("--prompt", default="Natalia sold clips to 48 of her friends in April, and then she sold "
                        "half as many clips in May. How many clips did Natalia sell altogether in April and May?")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--total-tokens", type=int, default=TreeConfig.total_tokens)
    parser.add_argument("--depth", type=int, default=TreeConfig.depth)
    parser.add_argument("--top-k", type=int, default=TreeConfig.top_k)
    parser.add_argument("--draft-vocab", type=int, default=8192,
                        help="reduced draft vocabulary of the untrained drafter (0: the full vocabulary)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    target = load_target(args.target, device=args.device)
    if args.drafter:
        drafter = Drafter.load(args.drafter, target)
    else:
        size = args.draft_vocab or None
        drafter = Drafter(target, DrafterConfig(draft_vocab_size=size, seed=args.seed),
                          d2t=None if size is None else torch.arange(size))
    tree = TreeConfig(args.total_tokens, args.depth, args.top_k)
    text, _ = format_conversation(target.tokenizer, [("user", args.prompt)], add_generation_prompt=True)
    ids = torch.tensor(target.tokenizer(text, add_special_tokens=False).input_ids)

    runs = {}
    for name in ("vanilla", "speculative"):
        generator = torch.Generator().manual_seed(args.seed)
        if name == "vanilla":
            runs[name] = vanilla_generate(target, ids, args.max_new_tokens, args.temperature, generator)
        else:
            runs[name] = speculative_generate(target, EagleProposer(drafter, tree), ids, args.max_new_tokens,
                                              args.temperature, generator)
    print(target.tokenizer.decode(runs["speculative"].tokens))
    print(f"\ntarget {args.target}, tree {tree}, drafter {args.drafter or 'untrained'}")
    for name, run in runs.items():
        decode_s = run.seconds - run.prefill_seconds
        print(f"{name:>12}: {len(run.tokens)} tokens, {(len(run.tokens) - 1) / decode_s:6.2f} tokens/s after prefill, "
              f"tau {acceptance_length(run.cycles):.2f} over {len(run.cycles)} target passes")
    if args.temperature == 0:
        same = runs["speculative"].tokens == runs["vanilla"].tokens
        print(f"greedy outputs identical: {same}")
        if not same:
            raise SystemExit("speculative output differs from the target's greedy output: this is a bug")


if __name__ == "__main__":
    main()
