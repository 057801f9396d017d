"""Learning curve: tau by replay at T=0 against training tokens and conversations, dataset text vs
target-written answers.

    python benchmarks/learning_curve.py --workdir results/learning_curve \
        [--data gsm8k_train:target=results/data/gemma-3-270m/target/gsm8k_train.parquet ...] \
        [--sources gsm8k_train sharegpt] [--responses dataset target] [--conversations 160 320 640 1280] \
        [--epochs 8] [--points 3] [--dev-prompts 8] [--max-new-tokens 96] [--tree 16,4,4]

For every source (math: GSM8K train; chat: ShareGPT) and every answer writer (the dataset's
text, or the target's own few-shot answers, `taps.answers`), an EAGLE-2 drafter is trained
on the same conversations, and at `points` steps along the run its weights are scored by
replay at T=0 (`taps.replay`) on development prompts: the last `dev-prompts` conversations of
the source's seeded order, which no drafter trains on (training takes the first ones) and which
are never test-benchmark prompts. tau comes with its 95% bootstrap CI over prompts.

The conversations axis: with several `--conversations` counts, each count trains its own drafter, at
the same epochs, on the first that many conversations of the source's seeded order (a prefix, as the
workflow's mixtures take one), from data written once for the largest count; the development prompts
follow the largest count, so every point is scored on the same prompts.

A point inside the run is scored with the weights of that step, before the cosine schedule has
annealed, so it underestimates a run that stops there; the last point is the finished run.
Data already written by the workflow can be passed with --data (the rule regenerate's Parquet);
what is missing is built here (dataset text: seconds; target answers: minutes of generation).
Run it on an otherwise idle machine; it prints a table and writes curve.csv in the workdir.
"""

from __future__ import annotations

import argparse
import json
import os

import pandas as pd
import torch
from safetensors.torch import load_file

from taps.answers import AnswerConfig, development_prompts, prepare_source
from taps.batching import plan_batches
from taps.data import SOURCE_PRESETS, load_source
from taps.draft import EagleProposer
from taps.features import extract_features
from taps.generate import vanilla_generate
from taps.metrics import bootstrap_ci
from taps.prompts import choose_exemplars, first_exchange, plain_format
from taps.replay import replay_generate
from taps.shards import FeatureMixture
from taps.target import load_target
from taps.train import build_drafter, train_drafter
from taps.train_config import TrainConfig
from taps.tree import TreeConfig
from taps.vocab import write_vocab

FEWSHOT = {"gsm8k_train": 3, "math_train": 3, "sharegpt": 2}  # as config/config.yaml


def dev_prompts(target, name, conversations, fmt, count, max_new_tokens, seed, exclude, trained):
    """(prompt ids, greedy reference) of the source's development prompts (`taps.answers.development_prompts`)."""
    stop = fmt.stop_strings(target.tokenizer)
    out = []
    for ids in development_prompts(name, conversations, target.tokenizer, fmt, count, seed, trained, exclude):
        ids = torch.tensor(ids)
        out.append((ids, vanilla_generate(target, ids, max_new_tokens, stop=stop).tokens))
    return out, stop


def score(target, drafter, prompts, stop, tree, max_new_tokens):
    """tau (95% CI) of a drafter by replay over the development prompts."""
    proposer = EagleProposer(drafter, tree)
    tokens, passes = [], []
    for ids, reference in prompts:
        out = replay_generate(target, proposer, ids, reference, max_new_tokens, stop=stop)
        tokens.append(len(out.tokens) - 1)
        passes.append(len(out.cycles))
    return bootstrap_ci(tokens, passes)


def newest_state(run_dir: str) -> str:
    root = os.path.join(run_dir, "state")
    return os.path.join(root, sorted(n for n in os.listdir(root) if n.startswith("step-"))[-1])


def curve(target, shards, run_dir, config, points, prompts, stop, tree, max_new_tokens):
    """Train in `points` legs (resuming); after each, replay that step's weights. Rows of the curve."""
    total = len(plan_batches(shards.lengths, config))
    rows = []
    for k in range(1, points + 1):
        steps = round(total * k / points)
        metrics = train_drafter(target, shards, run_dir, config, progress=False, max_steps=steps)
        drafter = build_drafter(target, shards, config)
        drafter.load_state_dict(load_file(os.path.join(newest_state(run_dir), "drafter.safetensors")))
        tau, low, high = score(target, drafter.eval(), prompts, stop, tree, max_new_tokens)
        rows.append({"step": steps, "of_steps": total, "train_tokens": int(metrics.tokens.sum()),
                     "tau": tau, "tau_low": low, "tau_high": high})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def source_data(target, name, conversations, responses, fmt, exclude, args, path):
    """The source's training rows written by `responses` (reused when the file exists)."""
    if not os.path.exists(path):
        config = AnswerConfig(responses=responses, max_new_tokens=args.answer_tokens, batch_size=32)
        prepare_source(name, conversations, max(args.conversations), args.seed, target.tokenizer, fmt, config, path,
                       target=target, exclude=exclude)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="gemma-3-270m")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--data", nargs="*", default=[], help="SOURCE:RESPONSES=parquet written by the workflow")
    parser.add_argument("--sources", nargs="+", default=["gsm8k_train", "sharegpt"])
    parser.add_argument("--responses", nargs="+", default=["dataset", "target"])
    parser.add_argument("--conversations", type=int, nargs="+", default=[320],
                        help="training conversations per source: one drafter per count, on a prefix of the largest")
    parser.add_argument("--answer-tokens", type=int, default=128, help="max_new_tokens of target-written answers")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--points", type=int, default=3, help="scored points along each run")
    parser.add_argument("--dev-prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--tree", default="16,4,4", help="total_tokens,depth,top_k")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.workdir, exist_ok=True)
    target = load_target(args.target, device="cpu")
    given = dict(item.split("=", 1) for item in args.data)
    tree, prepared = TreeConfig(*map(int, args.tree.split(","))), {}
    for name in args.sources:  # data of every variant first: one shared draft vocabulary
        conversations = load_source(SOURCE_PRESETS[name], args.data_dir)
        exclude = choose_exemplars(conversations, FEWSHOT.get(name, 0), args.seed, name)
        fmt = plain_format(target.tokenizer, [first_exchange(conversations[i]) for i in exclude])
        dev, stop = dev_prompts(target, name, conversations, fmt, args.dev_prompts, args.max_new_tokens, args.seed,
                                exclude, max(args.conversations))
        for responses in args.responses:
            path = given.get(f"{name}:{responses}") or os.path.join(args.workdir, f"{name}-{responses}.parquet")
            prepared[name, responses] = (source_data(target, name, conversations, responses, fmt, exclude, args,
                                                     path), dev, stop)
    vocab = os.path.join(args.workdir, "vocab.safetensors")
    d2t = write_vocab([p for p, _, _ in prepared.values()], target.vocab_size, args.vocab, vocab)
    config = TrainConfig(epochs=args.epochs, lr=3e-4, batch_tokens=2048, max_length=512, warmup_steps=10,
                         seed=args.seed)  # config/config.yaml's EAGLE-2 settings
    rows = []
    for (name, responses), (path, dev, stop) in prepared.items():
        features = os.path.join(args.workdir, f"features-{name}-{responses}")
        if not os.path.exists(features):
            extract_features(target, path, features, dtype=torch.bfloat16, d2t=d2t)
        for count in sorted(args.conversations):
            shards = FeatureMixture([(features, count)], target.fingerprint())
            run = os.path.join(args.workdir, f"run-{name}-{responses}-{count}")
            for row in curve(target, shards, run, config, args.points, dev, stop, tree, args.max_new_tokens):
                rows.append({"source": name, "responses": responses, "conversations": count, **row})
    table = pd.DataFrame(rows)
    table.to_csv(os.path.join(args.workdir, "curve.csv"), index=False)
    print(table.to_string(index=False, float_format="%.2f"))


if __name__ == "__main__":
    main()
