"""Evaluate one composition of drafters on one benchmark at one temperature; write raw rows as Parquet."""

import argparse
import json
import os
import shutil
import tempfile

import pandas as pd

from common import add_benchmark_args, add_target_args, benchmark_prompts, open_target, prompt_format
from taps.compose import compose, proposers_for
from taps.drafter import Drafter
from taps.evaluate import EvalConfig, evaluate, read_references
from taps.tree import TreeConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_args(parser)
    add_benchmark_args(parser)
    parser.add_argument("--drafters", nargs="+", required=True, help="drafter directories, in composition order")
    parser.add_argument("--composition", required=True, type=json.loads, help="{composition, drafters, options}")
    parser.add_argument("--temperature", type=float, required=True)
    parser.add_argument("--references", default="", help="greedy references (rule reference) to replay T=0 against")
    parser.add_argument("--label", nargs=3, required=True, metavar=("TARGET", "BACKBONE", "COMPOSITION"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    target = open_target(args)
    tree = TreeConfig(**args.settings.get("tree", {}))
    proposer = compose(args.composition["composition"],
                       proposers_for([Drafter.load(d, target) for d in args.drafters], tree),
                       **args.composition.get("options", {}))
    prompts = benchmark_prompts(args)
    config = EvalConfig(args.temperature, args.settings.get("max_new_tokens", 128), args.seed,
                        args.settings.get("replay", False), args.settings.get("timed_prompts", 1))
    references = read_references(args.references) if args.references else None
    rows = evaluate(target, proposer, prompts, config, references=references,
                    fmt=prompt_format(args, target.tokenizer))
    label = dict(zip(("target", "backbone", "composition"), args.label), temperature=args.temperature)
    tmp = tempfile.mkdtemp(prefix=".eval-", dir=os.path.dirname(os.path.abspath(args.out)))
    for name, table in (("cycles", rows.cycles), ("nodes", rows.nodes), ("turns", rows.turns)):
        pd.DataFrame([{**label, **r} for r in table]).to_parquet(os.path.join(tmp, f"{name}.parquet"))
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump({**vars(args), "tree": vars(tree), "eval": vars(config)}, f, indent=2)
    shutil.rmtree(args.out, ignore_errors=True)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
