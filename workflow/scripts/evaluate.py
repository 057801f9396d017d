"""Evaluate compositions of drafters on one benchmark at one temperature; raw rows as Parquet, one directory each."""

import argparse
import json
import os
import shutil
import tempfile

import pandas as pd

from common import add_benchmark_args, add_target_args, benchmark_prompts, open_target, prompt_format
from taps.compose import compose, proposers_for
from taps.drafter import Drafter
from taps.evaluate import EvalConfig, evaluate_many, read_references
from taps.intermediates import read_json
from taps.partial import PartialRun, digest
from taps.tree import TreeConfig

TABLES = ("cycles", "nodes", "turns", "candidates")


def write_rows(rows, label: dict, settings: dict, out: str) -> None:
    """One composition's rows (label columns first) and settings, replacing `out` atomically."""
    tmp = tempfile.mkdtemp(prefix=".eval-", dir=os.path.dirname(os.path.abspath(out)))
    for name in TABLES:
        pd.DataFrame([{**label, **r} for r in getattr(rows, name)]).to_parquet(os.path.join(tmp, f"{name}.parquet"))
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(settings, f, indent=2)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_args(parser)
    add_benchmark_args(parser)
    parser.add_argument("--drafters", nargs="+", required=True, metavar="NAME=DIR", help="every drafter combined")
    parser.add_argument("--compositions", required=True, type=json.loads,
                        help="{name: {composition, drafters, options}}, in output order")
    parser.add_argument("--tuned", nargs="*", default=[], metavar="NAME=JSON",
                        help="the tree rule tune_tree chose, for each composition with `tree: tuned`")
    parser.add_argument("--temperature", type=float, required=True)
    parser.add_argument("--references", default="", help="greedy references (rule reference) to replay T=0 against")
    parser.add_argument("--label", nargs=2, required=True, metavar=("TARGET", "BACKBONE"))
    parser.add_argument("--outs", nargs="+", required=True, help="one output directory per composition")
    args = parser.parse_args()
    if len(args.outs) != len(args.compositions):
        parser.error(f"--outs names {len(args.outs)} directories for {len(args.compositions)} compositions")
    target = open_target(args, fp32_logits=args.settings.get("fp32_logits", False))
    # each composition's tree: evaluate.tree, overridden by the composition's own `tree`, or the tuned one
    tuned_paths = dict(t.split("=", 1) for t in args.tuned)
    tuned = {name: read_json(path, "tuned tree") for name, path in tuned_paths.items()}
    trees = {name: TreeConfig(**(tuned[name]["tree"] if spec.get("tree") == "tuned" else
                                 {**args.settings.get("tree", {}), **spec.get("tree", {})}))
             for name, spec in args.compositions.items()}
    drafter_dirs = dict(d.split("=", 1) for d in args.drafters)
    drafters = {name: Drafter.load(path, target) for name, path in drafter_dirs.items()}
    proposers = {name: compose(spec["composition"], proposers_for([drafters[d] for d in spec["drafters"]], trees[name]),
                               **spec.get("options", {}))
                 for name, spec in args.compositions.items()}
    config = EvalConfig(args.temperature, args.settings.get("max_new_tokens", 128), args.seed,
                        args.settings.get("replay", False), args.settings.get("timed_prompts", 1),
                        args.settings.get("on_mismatch", EvalConfig.on_mismatch),
                        args.settings.get("prefix_cache", EvalConfig.prefix_cache))
    references = read_references(args.references) if args.references else None
    # finished turns kept beside the first output, so that a killed job resumes (taps.partial); valid for these
    # settings and these drafters', references' and exemplars' bytes
    inputs = [p for p in (*drafter_dirs.values(), args.references, args.fewshot, *tuned_paths.values()) if p.strip()]
    partial = PartialRun(f"{args.outs[0]}.partial", digest(vars(args), inputs))
    rows = evaluate_many(target, proposers, benchmark_prompts(args), config, references=references,
                         fmt=prompt_format(args, target.tokenizer), timed=args.settings.get("timed_compositions"),
                         partial=partial)
    if partial.resumed:
        print(f"resumed {partial.resumed} finished turns from {partial.directory}")
    for (name, spec), out in zip(args.compositions.items(), args.outs):
        label = {"target": args.label[0], "backbone": args.label[1], "composition": name,
                 "temperature": args.temperature}
        write_rows(rows[name], label, {**vars(args), "composition": {"name": name, **spec}, "tree": vars(trees[name]),
                                       "predicted": tuned[name]["predicted"] if name in tuned else None,
                                       "eval": vars(config)}, out)
    partial.remove()


if __name__ == "__main__":
    main()
