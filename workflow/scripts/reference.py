"""The target's own output for every turn of one benchmark (vanilla loop, T=0), for replay."""

import argparse
import json

import torch

from taps.benchmarks import benchmark_from_config, load_prompts
from taps.evaluate import EvalConfig, reference_rows, write_references
from taps.target import load_target_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="target.json written by the target rule")
    parser.add_argument("--benchmark-name", required=True)
    parser.add_argument("--benchmark", required=True, type=json.loads, help="null (built-in) or a custom spec")
    parser.add_argument("--settings", required=True, type=json.loads, help="prompts, max_new_tokens")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    target = load_target_spec(args.target, device=args.device)
    benchmark = benchmark_from_config(args.benchmark_name, args.benchmark)
    prompts = load_prompts(benchmark, args.data_dir, limit=args.settings.get("prompts"), seed=args.seed)
    config = EvalConfig(0.0, args.settings.get("max_new_tokens", 128), args.seed)
    write_references(reference_rows(target, prompts, config), args.out)


if __name__ == "__main__":
    main()
