"""What the shared few-shot prefix saves: a benchmark prompt's prefill run whole against on top of the
exemplars' cache (`taps.generate.SharedPrefix`, as every evaluation job runs it).

    python benchmarks/prefix_cache.py --target results/targets/gemma-3-270m/target.json \
        --fewshot results/prompts/gemma-3-270m/gsm8k_train.json [--benchmark gsm8k] [--prompts 5] [--threads 1]

Prints the prefix and prompt lengths, then the mean ms per prompt of each way, alternated twice so
both see the same load, and their ratio. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from taps.benchmarks import BUILTIN, build_turn_prompt, load_prompts
from taps.evaluate import shared_prefix
from taps.generate import run_prompt
from taps.prompts import load_format
from taps.target import load_target_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help="a target.json (rule target)")
    parser.add_argument("--fewshot", required=True, help="few-shot exemplars (rule fewshot)")
    parser.add_argument("--benchmark", default="gsm8k", choices=sorted(BUILTIN))
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="1: as evaluation jobs run")
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    target = load_target_spec(args.target)
    fmt = load_format(target.tokenizer, args.fewshot)
    prompts = load_prompts(BUILTIN[args.benchmark], args.data_dir, limit=args.prompts, seed=0)
    ids = [torch.tensor(target.tokenizer(build_turn_prompt(target.tokenizer, [], p.turns[0], fmt),
                                         add_special_tokens=False).input_ids) for p in prompts]
    prefix = shared_prefix(target, fmt)
    print(f"prefix {len(prefix.ids)} tokens; prompts {', '.join(str(len(i)) for i in ids)} tokens")
    ms = {"whole": [], "shared prefix": []}
    for _ in range(2):
        for name, pre in (("whole", None), ("shared prefix", prefix)):
            start = time.perf_counter()
            for i in ids:
                run_prompt(target, i, pre)
            ms[name].append(1e3 * (time.perf_counter() - start) / len(ids))
    for name, values in ms.items():
        print(f"{name}: {sum(values) / len(values):.0f} ms per prompt")
    print(f"ratio: {sum(ms['whole']) / sum(ms['shared prefix']):.1f}x (prompts reused the prefix: {prefix.reused})")


if __name__ == "__main__":
    main()
