"""What the tree budget gains: tau and tokens/s of one composition for several tree shapes.

    python benchmarks/tree_budget.py --drafters results/drafters/gemma-3-270m/eagle2/math/drafter \
        [--composition single] [--trees 60,5,10 16,4,4 8,3,2] [--benchmark gsm8k] [--prompts 3] \
        [--max-new-tokens 64] [--data-dir ../shared/data] [--target gemma-3-270m]

Every prompt is decoded by the vanilla loop and by the engine with each tree, in this one run
(taps.evaluate, greedy outputs checked identical), so the speedups are side by side. A CPU
pays for every verified node (benchmarks/cost_curve.py), so its best tree is smaller than a
GPU's. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from taps.benchmarks import BUILTIN, load_prompts
from taps.compose import compose, proposers_for
from taps.drafter import Drafter
from taps.evaluate import EvalConfig, evaluate
from taps.aggregate import Evaluation, evaluation_row
from taps.target import load_target
from taps.tree import TreeConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="gemma-3-270m")
    parser.add_argument("--drafters", nargs="+", required=True)
    parser.add_argument("--composition", default="single")
    parser.add_argument("--trees", nargs="+", default=["60,5,10", "16,4,4", "8,3,2"],
                        help="total_tokens,depth,top_k per tree")
    parser.add_argument("--benchmark", default="gsm8k", choices=sorted(BUILTIN))
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    target = load_target(args.target, device="cpu")
    drafters = [Drafter.load(d, target) for d in args.drafters]
    prompts = load_prompts(BUILTIN[args.benchmark], args.data_dir, limit=args.prompts, seed=0)
    tables = []
    for spec in args.trees:
        tree = TreeConfig(*map(int, spec.split(",")))
        proposer = compose(args.composition, proposers_for(drafters, tree))
        rows = evaluate(target, proposer, prompts, EvalConfig(max_new_tokens=args.max_new_tokens))
        key = dict(target=args.target, backbone="-", composition=f"tree {spec}", temperature=0.0)
        frames = (pd.DataFrame(getattr(rows, t)).assign(**key) for t in ("turns", "cycles", "nodes", "candidates"))
        ev = Evaluation(*frames,
                        spec={"composition": args.composition, "drafters": args.drafters}, depth=tree.depth + 1)
        tables.append(pd.DataFrame([evaluation_row(ev)]))
    columns = ["composition", "prompts", "tau", "tau_low", "tau_high", "tokens_per_s", "vanilla_tokens_per_s",
               "speedup", "identical"]
    print(pd.concat(tables)[columns].to_string(index=False, float_format="%.2f"))


if __name__ == "__main__":
    main()
