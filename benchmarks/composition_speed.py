"""Configured compositions timed side by side on a finished run's drafters: the wall clock the DAG does not measure.

    python benchmarks/composition_speed.py --results results \
        --compositions route-confidence select-leader math [--backbone eagle2] [--prompts 3] [--threads 1]

The DAG times a few compositions (evaluate.timed_compositions). This times any configured ones as the evaluation
runs them: T=0, the config's device, tree (a composition's own `tree`, or rule tune_tree's choice),
max_new_tokens, fp32_logits, on_mismatch, prefix cache and few-shot exemplars, on the first `--prompts` of every
benchmark's evaluated sample (the DAG's timed prompts). Every turn runs the vanilla loop once, then each
composition's engine in turn (`taps.evaluate.evaluate_many` without replay), so a change in the machine's load
touches all alike; at T=0 outputs are checked against the target's greedy output (on_mismatch). Printed per
composition: its tree; decode tokens/s (prefill excluded) and vanilla's over all timed turns; the speedup over
vanilla (mean over benchmarks of the tokens/s ratio); tau and drafter steps per pass (mean over benchmarks); its
tokens/s against the first composition's (mean over benchmarks of the ratio); the turns whose output equalled the
target's. CIs are 95% bootstraps over prompts, resampled within each benchmark. `--out` keeps the turn rows
(Parquet). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import numpy as np
import pandas as pd
import torch
import yaml

from taps.benchmarks import benchmark_from_config, load_prompts
from taps.compose import compose, proposers_for
from taps.drafter import Drafter
from taps.evaluate import EvalConfig, evaluate_many
from taps.intermediates import read_json
from taps.metrics import paired_ratio_bootstrap
from taps.prompts import load_format
from taps.tables import fmt_ci
from taps.target import load_target_spec
from taps.tree import TreeConfig


def sample_size(evaluate: dict, benchmark: str) -> int:
    """evaluate.prompts for one benchmark: one count for all, or benchmark -> count."""
    prompts = evaluate["prompts"]
    return prompts[benchmark] if isinstance(prompts, dict) else prompts


def tree_of(spec: dict, evaluate: dict, tuned_json: str) -> TreeConfig:
    """A composition's tree, as the evaluation builds it."""
    if spec.get("tree") == "tuned":
        return TreeConfig(**read_json(tuned_json, "tuned tree (rule tune_tree)")["tree"])
    return TreeConfig(**{**evaluate.get("tree", {}), **spec.get("tree", {})})


def mean_ratio(turns: pd.DataFrame, a: str, b: str, seed: int) -> tuple[float, float, float]:
    """Mean over benchmarks of a's decode tokens/s over b's ("vanilla": the vanilla loop's), with its CI."""
    num, den, strata = {}, {}, {}
    for bench, rows in turns.groupby("benchmark", sort=False):
        per_prompt = rows.groupby(["composition", "prompt"], sort=False)[
            ["new_tokens", "seconds", "vanilla_new_tokens", "vanilla_seconds"]].sum()
        for side in (a, b):  # vanilla's turns are the same rows beside every composition: read a's
            vanilla = side == "vanilla"
            tokens, seconds = ("vanilla_new_tokens", "vanilla_seconds") if vanilla else ("new_tokens", "seconds")
            own = per_prompt.loc[a if vanilla else side]
            num[(side, bench)], den[(side, bench)], strata[(side, bench)] = own[tokens], own[seconds], bench
    benches = list(dict.fromkeys(turns.benchmark))
    return paired_ratio_bootstrap(num, den, strata,
                                  lambda r: np.mean([r[(a, x)] / r[(b, x)] for x in benches], axis=0), seed=seed)


def load_compositions(config: dict, args: argparse.Namespace) -> tuple[object, dict, dict[str, TreeConfig]]:
    """The target, the proposers of `args.compositions` (by name) on the run's drafters, and their trees."""
    evaluate, r, t, b = config["evaluate"], args.results, args.target, args.backbone
    specs = {c: evaluate["compositions"][c] for c in args.compositions}
    torch.set_num_threads(args.threads)
    target = load_target_spec(f"{r}/targets/{t}/target.json", device=config.get("device", "auto"),
                              fp32_logits=evaluate.get("fp32_logits", False))
    released = config["targets"].get(t, {}).get("released", {}).get(b, {})
    drafters = {d: Drafter.load(f"{r}/{'released' if d in released else 'drafters'}/{t}/{b}/{d}/drafter", target)
                for d in sorted({d for spec in specs.values() for d in spec["drafters"]})}
    trees = {c: tree_of(spec, evaluate, f"{r}/tune/{t}/{b}/{spec['drafters'][0]}.json") for c, spec in specs.items()}
    proposers = {c: compose(spec["composition"], proposers_for([drafters[d] for d in spec["drafters"]], trees[c]),
                            **spec.get("options", {}))
                 for c, spec in specs.items()}
    return target, proposers, trees


def benchmark_inputs(config: dict, args: argparse.Namespace, target, bench: str):
    """A benchmark's evaluated prompts (the seeded sample the DAG evaluates) and its prompt format."""
    evaluate, r, t = config["evaluate"], args.results, args.target
    prompts = load_prompts(benchmark_from_config(bench, evaluate["benchmarks"].get(bench)),
                           args.data_dir or config["data_dir"], limit=sample_size(evaluate, bench), seed=config["seed"])
    source = evaluate.get("fewshot", {}).get(bench)
    fewshot = f"{r}/prompts/{t}/{source}.json" if source else None
    if fewshot and not os.path.exists(fewshot):
        raise SystemExit(f"{fewshot} is missing: run the DAG's fewshot rule for {source} first")
    return prompts, load_format(target.tokenizer, fewshot)


def timed_turns(config: dict, args: argparse.Namespace) -> tuple[pd.DataFrame, dict[str, TreeConfig]]:
    """Every timed turn of every composition (the turn rows of `evaluate_many`), and the compositions' trees."""
    evaluate = config["evaluate"]
    target, proposers, trees = load_compositions(config, args)
    settings = EvalConfig(0.0, evaluate.get("max_new_tokens", EvalConfig.max_new_tokens), config["seed"],
                          replay=False, timed_prompts=args.prompts,
                          on_mismatch=evaluate.get("on_mismatch", EvalConfig.on_mismatch),
                          prefix_cache=evaluate.get("prefix_cache", EvalConfig.prefix_cache))
    frames = []
    for i, bench in enumerate(args.benchmarks or list(evaluate["benchmarks"])):
        prompts, fmt = benchmark_inputs(config, args, target, bench)
        prompts = prompts[:args.prompts]
        if i == 0:  # first calls pay one-off costs (allocator, lazy init): a short untimed run first
            evaluate_many(target, proposers, prompts[:1], dataclasses.replace(settings, max_new_tokens=8), fmt=fmt,
                          progress=False)
        rows = evaluate_many(target, proposers, prompts, settings, fmt=fmt)
        frames += [pd.DataFrame(rows[c].turns).assign(composition=c) for c in proposers]
    return pd.concat(frames, ignore_index=True), trees


def summary(turns: pd.DataFrame, trees: dict[str, TreeConfig], seed: int) -> pd.DataFrame:
    """One row per composition, in the order given; the first is the one the others are compared with."""
    first, rows = next(iter(trees)), []
    for c, tree in trees.items():
        own = turns[turns.composition == c]
        per_bench = own.groupby("benchmark", sort=False)[["new_tokens", "passes", "drafter_steps"]].sum()
        rows.append({"composition": c, "tree": f"{tree.total_tokens}/{tree.depth}/{tree.top_k}",
                     "tokens/s": own.new_tokens.sum() / own.seconds.sum(),
                     "vanilla tokens/s": own.vanilla_new_tokens.sum() / own.vanilla_seconds.sum(),
                     "speedup": fmt_ci(*mean_ratio(turns, c, "vanilla", seed)) + "x",
                     "tau": (per_bench.new_tokens / per_bench.passes).mean(),
                     "drafter steps/pass": (per_bench.drafter_steps / per_bench.passes).mean(),
                     f"vs {first}": fmt_ci(*mean_ratio(turns, c, first, seed)) + "x",
                     "identical": f"{int(own.identical.sum())} of {len(own)}"})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="a finished run's results directory")
    parser.add_argument("--config", default="config/config.yaml", help="the run's config")
    parser.add_argument("--compositions", nargs="+", required=True, help="configured compositions; the first is "
                        "the one the others are compared with")
    parser.add_argument("--target", required=True, help="a target of the config, e.g. gemma-3-270m")
    parser.add_argument("--backbone", default="eagle2")
    parser.add_argument("--benchmarks", nargs="+", default=None, help="default: the config's")
    parser.add_argument("--data-dir", default=None, help="default: the config's data_dir")
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="the evaluation's is evaluate.threads")
    parser.add_argument("--out", default=None, help="write the turn rows here (Parquet)")
    args = parser.parse_args()
    with open(args.config) as f:
        config = yaml.safe_load(f)
    evaluate = config["evaluate"]
    unknown = [c for c in args.compositions if c not in evaluate["compositions"]]
    if unknown:
        parser.error(f"not in {args.config}'s evaluate.compositions: {', '.join(unknown)}")
    elsewhere = [c for c in args.compositions if args.backbone not in evaluate["compositions"][c].get(
        "backbones", [args.backbone])]
    if elsewhere:
        parser.error(f"not evaluated on backbone {args.backbone} (their `backbones`): {', '.join(elsewhere)}")
    fewest = min(sample_size(evaluate, bench) for bench in args.benchmarks or evaluate["benchmarks"])
    if not 1 <= args.prompts <= fewest:
        parser.error(f"--prompts must be 1..{fewest} (the evaluated sample), got {args.prompts}")
    turns, trees = timed_turns(config, args)
    if args.out:
        turns.to_parquet(args.out)
    print(f"{args.prompts} prompts x {turns.benchmark.nunique()} benchmarks ({len(turns) // len(trees)} turns), T=0, "
          f"{args.threads} thread(s), {args.target} / {args.backbone}, drafters of {args.results}")
    print(summary(turns, trees, config["seed"]).to_string(index=False, float_format="%.2f"))


if __name__ == "__main__":
    main()
