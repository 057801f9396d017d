"""Our decoding loops against the tools a user already has, side by side in one run.

    python benchmarks/vs_hf.py --drafter results/drafters/gemma-3-270m/eagle2/math/drafter \
        [--fewshot results/prompts/gemma-3-270m/gsm8k_train.json] [--prompts 5] [--max-new-tokens 128]

On the same GSM8K test prompts (a seeded sample, rendered as the evaluation renders them: few-shot
exemplars when `--fewshot` names them), T=0, the same target weights, it times:
- Hugging Face `generate` (greedy), the baseline every ratio is taken against;
- Hugging Face prompt-lookup decoding (`prompt_lookup_num_tokens`), which needs no training;
- our vanilla loop (`taps.generate.vanilla_generate`);
- our speculative loop with the drafter, for each `--trees` shape.
Every method decodes the same `max_new_tokens` with no stop string (HF `generate` knows none),
ending only at EOS. Printed per method: tokens/s (new tokens over wall time, prefill included),
the ratio to `generate`, on how many prompts the output equals `generate`'s, and for the
speculative loop tau and ms per verification pass. Every method runs once untimed first; then
they run in turn on each prompt, so a change in the machine's load touches all of them alike.
Still, run it on an idle machine.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
from transformers import AutoModelForCausalLM

from taps.benchmarks import BUILTIN, build_turn_prompt, load_prompts
from taps.draft import EagleProposer
from taps.drafter import Drafter
from taps.generate import speculative_generate, vanilla_generate
from taps.prompts import load_format
from taps.target import load_target, resolve_target
from taps.tree import TreeConfig


def stock_model(name: str, dtype: torch.dtype):
    """Hugging Face's own copy of a target, unmodified (the adapter turns its model's linears into taps.linear's)."""
    path, extra = resolve_target(name)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **extra).eval()


def hf_generate(model, ids: torch.Tensor, max_new_tokens: int, **options) -> list[int]:
    """Greedy Hugging Face generate; the new tokens."""
    out = model.generate(ids[None].to(model.device), attention_mask=torch.ones_like(ids)[None],
                         do_sample=False, max_new_tokens=max_new_tokens, **options)
    return out[0, ids.numel():].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="gemma-3-270m")
    parser.add_argument("--drafter", required=True, help="a trained drafter directory")
    parser.add_argument("--fewshot", default="", help="few-shot exemplars (rule fewshot); '' for the plain template")
    parser.add_argument("--trees", nargs="+", default=["60,5,10", "16,4,4"], help="total_tokens,depth,top_k")
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--lookup-tokens", type=int, default=10, help="HF prompt_lookup_num_tokens")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    target = load_target(args.target, device="cpu")
    stock = stock_model(args.target, target.dtype)
    drafter = Drafter.load(args.drafter, target)
    fmt = load_format(target.tokenizer, args.fewshot or None)
    prompts = load_prompts(BUILTIN["gsm8k"], args.data_dir, limit=args.prompts, seed=0)
    n = args.max_new_tokens
    methods = {
        "HF generate": lambda ids: (hf_generate(stock, ids, n), None),
        f"HF prompt lookup ({args.lookup_tokens})": lambda ids: (
            hf_generate(stock, ids, n, prompt_lookup_num_tokens=args.lookup_tokens), None),
        "vanilla loop": lambda ids: (vanilla_generate(target, ids, n).tokens, None),
    }
    for spec in args.trees:
        tree = TreeConfig(*map(int, spec.split(",")))
        methods[f"speculative, tree {spec}"] = lambda ids, tree=tree: (
            lambda g: (g.tokens, g))(speculative_generate(target, EagleProposer(drafter, tree), ids, n))
    warm = torch.tensor(target.tokenizer(build_turn_prompt(target.tokenizer, [], prompts[0].turns[0], fmt),
                                         add_special_tokens=False).input_ids)
    for run in methods.values():  # first calls pay one-off costs (allocator, lazy init): not timed
        run(warm)
    rows = []
    for prompt in prompts:
        text = build_turn_prompt(target.tokenizer, [], prompt.turns[0], fmt)
        ids = torch.tensor(target.tokenizer(text, add_special_tokens=False).input_ids)
        for name, run in methods.items():
            start = time.perf_counter()
            tokens, generation = run(ids)
            seconds = time.perf_counter() - start
            rows.append({"method": name, "prompt": prompt.id, "tokens": tokens, "seconds": seconds,
                         "passes": len(generation.cycles) if generation else 0,
                         "emitted": sum(c["emitted"] for c in generation.cycles) if generation else 0})
    table = pd.DataFrame(rows)
    reference = table[table.method == "HF generate"].set_index("prompt").tokens
    table["identical"] = [t == reference[p] for t, p in zip(table.tokens, table.prompt)]
    table["new_tokens"] = table.tokens.map(len)
    summary = table.groupby("method", sort=False).agg(
        new_tokens=("new_tokens", "sum"), seconds=("seconds", "sum"), identical=("identical", "sum"),
        passes=("passes", "sum"), emitted=("emitted", "sum"))
    summary["tokens_per_s"] = summary.new_tokens / summary.seconds
    summary["vs_generate"] = summary.tokens_per_s / summary.tokens_per_s.iloc[0]
    summary["identical"] = summary.identical.astype(int).astype(str) + f" of {len(prompts)}"
    speculative = summary.passes > 0
    summary.loc[speculative, "tau"] = summary.emitted[speculative] / summary.passes[speculative]  # as taps.metrics
    summary.loc[speculative, "ms_per_pass"] = 1000 * summary.seconds[speculative] / summary.passes[speculative]
    print(f"{len(prompts)} GSM8K test prompts, {n} new tokens, T=0, {args.threads} threads, target {args.target}")
    print(summary[["tokens_per_s", "vs_generate", "identical", "tau", "ms_per_pass"]].to_string(float_format="%.2f"))


if __name__ == "__main__":
    main()
