"""The target's own output for every turn of one benchmark (vanilla loop, T=0), for replay."""

import argparse

from common import add_benchmark_args, add_target_args, benchmark_prompts, open_target, prompt_format
from taps.evaluate import EvalConfig, reference_rows, write_references


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_args(parser)
    add_benchmark_args(parser)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    target = open_target(args, fp32_logits=args.settings.get("fp32_logits", False))  # as the evaluations read it
    config = EvalConfig(0.0, args.settings.get("max_new_tokens", 128), args.seed,
                        prefix_cache=args.settings.get("prefix_cache", EvalConfig.prefix_cache))
    rows = reference_rows(target, benchmark_prompts(args), config, fmt=prompt_format(args, target.tokenizer))
    write_references(rows, args.out)


if __name__ == "__main__":
    main()
