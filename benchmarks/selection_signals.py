"""Which signal, read before or early in drafting, picks the tree routing would: on a routing composition's
replayed cycles (every drafter's whole tree on the same contexts), the tokens per pass that choosing by each
signal would give.

    python benchmarks/selection_signals.py --results results --target gemma-3-270m \
        [--composition route-confidence] [--backbone eagle2] [--benchmarks ...] [--threads 1]

Replays the configured routing composition at T=0 on every benchmark's evaluated prompts (the DAG's seeded
sample) against the DAG's references (rule reference). For each cycle and each drafter's tree it records the
signals a selection could read: the first level's top-1 probability (select-confidence's `top1`), the sum of
path probabilities of the nodes down to depth 1, 2 and 3 (depth 1 is the top_k mass, `topk`; depth 2 is close
to `depth2`, which grows a two-level tree of the same budget); beside routing's own signal, the whole tree's
mean confidence, and the drafted tokens each tree would have had accepted (both `taps.compose.candidate_scores`). Prints, per signal, the mean tokens per pass (accepted + 1) of the tree it
picks, per benchmark and domain-balanced (the mean of MT-Bench and of the math benchmarks' mean), beside each
drafter alone and the per-cycle oracle. This is an estimate on routing's contexts: a selection's own turns
drift from them after its first different choice, so its tau comes from the evaluation, not from here.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import yaml
from composition_speed import benchmark_inputs, load_compositions

from taps.evaluate import EvalConfig, evaluate_many, read_references
from taps.tree import DraftTree

CHAT = {"mt_bench"}  # the chat domain; every other benchmark is math
SIGNALS = ("top1", "depth1", "depth2", "depth3", "confidence")  # confidence: routing's own (candidate_scores)


def tree_signals(tree: DraftTree) -> dict[str, float]:
    """A tree's selection signals: top1 (its best first-level node's probability) and depth1..depth3 (the sum
    of path probabilities of its nodes down to that depth)."""
    depths, confidence = tree.depths, tree.confidence
    first = depths == 1
    signals = {"top1": tree.prob[first].max().item() if first.any() else 0.0}
    for d in (1, 2, 3):
        signals[f"depth{d}"] = confidence[(depths >= 1) & (depths <= d)].sum().item()
    return signals


class _Recording:
    """A routing proposer that also records every candidate tree's signals, one list per cycle."""

    def __init__(self, routed):
        self.routed, self.cycles = routed, []

    def __getattr__(self, name):
        return getattr(self.routed, name)

    def propose(self, root: int) -> DraftTree:
        tree = self.routed.propose(root)
        self.cycles.append([tree_signals(t) for t in self.routed.candidates])
        return tree


def picks(frame: pd.DataFrame, drafters: int) -> dict[str, np.ndarray]:
    """For each signal, the drafter whose tree it picks each cycle (ties to the lower index), each drafter
    alone, and the per-cycle oracle (the tree accepted longest)."""
    out = {name: frame[[f"{name}_{i}" for i in range(drafters)]].to_numpy().argmax(1) for name in SIGNALS}
    out.update({f"drafter {i} alone": np.full(len(frame), i) for i in range(drafters)})
    out["oracle"] = frame[[f"accepted_{i}" for i in range(drafters)]].to_numpy().argmax(1)
    return out


def tokens_per_pass(frame: pd.DataFrame, drafters: int) -> pd.DataFrame:
    """Per choice rule (rows) and benchmark (columns): the mean accepted + 1 of the picked trees; and the
    domain-balanced mean."""
    accepted = frame[[f"accepted_{i}" for i in range(drafters)]].to_numpy()
    rows = {}
    for name, choice in picks(frame, drafters).items():
        per_cycle = pd.Series(accepted[np.arange(len(frame)), choice] + 1, index=frame.index)
        rows[name] = per_cycle.groupby(frame.benchmark, sort=False).mean()
    table = pd.DataFrame(rows).T
    chat = [b for b in table.columns if b in CHAT]
    math = [b for b in table.columns if b not in CHAT]
    if chat and math:
        table["domain-balanced"] = (table[chat].mean(axis=1) + table[math].mean(axis=1)) / 2
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="a finished run's results directory")
    parser.add_argument("--config", default="config/config.yaml", help="the run's config")
    parser.add_argument("--composition", default="route-confidence", help="a configured routing composition")
    parser.add_argument("--target", required=True, help="a target of the config, e.g. gemma-3-270m")
    parser.add_argument("--backbone", default="eagle2")
    parser.add_argument("--benchmarks", nargs="+", default=None, help="default: the config's")
    parser.add_argument("--data-dir", default=None, help="default: the config's data_dir")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the cycle rows here (Parquet)")
    args = parser.parse_args()
    with open(args.config) as f:
        config = yaml.safe_load(f)
    evaluate = config["evaluate"]
    spec = evaluate["compositions"].get(args.composition)
    if spec is None or not spec["composition"].startswith("route-"):
        parser.error(f"{args.composition!r} is not a routing composition of {args.config}'s evaluate.compositions")
    args.compositions = [args.composition]
    target, proposers, _ = load_compositions(config, args)
    recording = _Recording(proposers[args.composition])
    settings = EvalConfig(0.0, evaluate.get("max_new_tokens", EvalConfig.max_new_tokens), config["seed"],
                          replay=True, timed_prompts=0,
                          prefix_cache=evaluate.get("prefix_cache", EvalConfig.prefix_cache))
    frames = []
    for bench in args.benchmarks or list(evaluate["benchmarks"]):
        prompts, fmt = benchmark_inputs(config, args, target, bench)
        references = read_references(f"{args.results}/references/{args.target}/{bench}.parquet")
        recording.cycles = []
        rows = evaluate_many(target, {args.composition: recording}, prompts, settings, references=references, fmt=fmt)
        candidates = pd.DataFrame(rows[args.composition].candidates)
        if len(candidates) != len(recording.cycles):
            raise SystemExit(f"{bench}: {len(candidates)} scored cycles against {len(recording.cycles)} recorded")
        signals = pd.DataFrame([{f"{k}_{i}": v for i, tree in enumerate(cycle) for k, v in tree.items()}
                                for cycle in recording.cycles])
        frames.append(pd.concat([candidates.reset_index(drop=True), signals], axis=1).assign(benchmark=bench))
    frame = pd.concat(frames, ignore_index=True)
    if args.out:
        frame.to_parquet(args.out)
    drafters = len(spec["drafters"])
    print(f"{len(frame)} cycles of {args.composition} ({', '.join(f'drafter {i}: {d}' for i, d in enumerate(spec['drafters']))}), "
          f"T=0, {args.target} / {args.backbone}, drafters of {args.results}; tokens per pass of the picked tree:")
    print(tokens_per_pass(frame, drafters).to_string(float_format="%.3f"))


if __name__ == "__main__":
    main()
