"""Is the engine exact on the real target? Our loops against each other and against Hugging Face.

    python benchmarks/exactness.py --drafters results/drafters/gemma-3-270m/eagle2/{math,chat}/drafter \
        --prompts-dir results/prompts/gemma-3-270m [--prompts 5] [--max-new-tokens 128]

On each benchmark's seeded prompts, rendered as the default config's evaluation renders them
(few-shot exemplars from `--prompts-dir`: GSM8K train for the math benchmarks, ShareGPT for
MT-Bench), T=0, it decodes with
- Hugging Face `generate` on an unmodified copy of the model (greedy);
- our vanilla loop;
- our speculative loop, with every drafter alone and with every composition of the registry
  over all of them (default tree 60/5/10).
It counts, per benchmark, the prompts where each speculative output equals our vanilla output
(the keystone: they must all), and where our vanilla output equals `generate`'s. Where those two
differ, it prints the first differing position and the top-2 logit margin there in both models:
our kernels (`taps.linear`) round differently from Hugging Face's, which flips a near-tie.
"""

from __future__ import annotations

import argparse
import os

import torch

from taps.benchmarks import BUILTIN, build_turn_prompt, load_prompts
from taps.compose import COMPOSITIONS, compose, proposers_for
from taps.drafter import Drafter
from taps.generate import speculative_generate, vanilla_generate
from taps.prompts import load_format
from taps.target import load_target
from taps.tree import TreeConfig
from vs_hf import hf_generate, stock_model  # benchmarks/, beside this script

FEWSHOT = {"gsm8k": "gsm8k_train", "math500": "gsm8k_train", "svamp": "gsm8k_train", "mt_bench": "sharegpt"}


def margin(logits: torch.Tensor) -> float:
    top = logits.float().topk(2).values
    return float(top[0] - top[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="gemma-3-270m")
    parser.add_argument("--drafters", nargs="+", required=True, help="trained drafter directories")
    parser.add_argument("--prompts-dir", default="", help="where the few-shot files <source>.json are")
    parser.add_argument("--benchmarks", nargs="+", default=list(FEWSHOT))
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--tree", default="60,5,10", help="total_tokens,depth,top_k")
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()
    torch.manual_seed(0)
    target = load_target(args.target, device="cpu")
    stock = stock_model(args.target, target.dtype)
    drafters = [Drafter.load(d, target) for d in args.drafters]
    tree = TreeConfig(*map(int, args.tree.split(",")))
    engines = {f"drafter {os.path.basename(os.path.dirname(d.rstrip('/')))}": ("single", [i])
               for i, d in enumerate(args.drafters)}
    if len(drafters) > 1:  # the other compositions combine several drafters
        engines.update({name: (name, list(range(len(drafters)))) for name in COMPOSITIONS if name != "single"})
    n = args.max_new_tokens
    for benchmark in args.benchmarks:
        fewshot = os.path.join(args.prompts_dir, f"{FEWSHOT[benchmark]}.json") if args.prompts_dir else None
        fmt = load_format(target.tokenizer, fewshot)
        same = {name: 0 for name in engines}
        hf_same, prompts = 0, load_prompts(BUILTIN[benchmark], args.data_dir, limit=args.prompts, seed=0)
        for prompt in prompts:
            ids = torch.tensor(target.tokenizer(build_turn_prompt(target.tokenizer, [], prompt.turns[0], fmt),
                                                add_special_tokens=False).input_ids)
            vanilla = vanilla_generate(target, ids, n).tokens
            for name, (composition, which) in engines.items():
                proposer = compose(composition, proposers_for([drafters[i] for i in which], tree))
                tokens = speculative_generate(target, proposer, ids, n).tokens
                same[name] += tokens == vanilla
                if tokens != vanilla:
                    print(f"  KEYSTONE BROKEN: {benchmark} {prompt.id} {name}")
            with torch.no_grad():
                hf = hf_generate(stock, ids, n)
                hf_same += hf == vanilla
                if hf != vanilla:
                    k = next((i for i, (a, b) in enumerate(zip(hf, vanilla)) if a != b), min(len(hf), len(vanilla)))
                    context = torch.cat([ids, torch.tensor(vanilla[:k], dtype=torch.long)])[None]
                    theirs = margin(stock(context).logits[0, -1])
                    ours = margin(target.model(context).logits[0, -1])
                    print(f"  {benchmark} {prompt.id}: vanilla differs from generate at new token {k} "
                          f"(ours {vanilla[k] if k < len(vanilla) else 'end'}, theirs {hf[k] if k < len(hf) else 'end'}); "
                          f"top-2 logit margin there: {theirs:.2e} in HF's model, {ours:.2e} in ours")
        cells = ", ".join(f"{name} {count}/{len(prompts)}" for name, count in same.items())
        print(f"{benchmark}: speculative == vanilla: {cells}; vanilla == HF generate: {hf_same}/{len(prompts)}",
              flush=True)


if __name__ == "__main__":
    main()
