"""What the workflow scripts share: the target a rule names, and a benchmark's prompts.

Each script runs as `python workflow/scripts/<name>.py`, so this directory is on sys.path.
"""

import argparse
import json

import torch

from taps.benchmarks import Prompt, benchmark_from_config, load_prompts
from taps.prompts import PromptFormat, load_format
from taps.target import TargetModel, load_target_spec


def add_target_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, help="target.json written by the target rule")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)


def open_target(args: argparse.Namespace, fp32_logits: bool = False) -> TargetModel:
    """Set the thread count, then load the target from its target.json (`fp32_logits`: TargetModel.logits)."""
    torch.set_num_threads(args.threads)
    return load_target_spec(args.target, device=args.device, fp32_logits=fp32_logits)


def add_benchmark_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmark-name", required=True)
    parser.add_argument("--benchmark", required=True, type=json.loads, help="null (built-in) or a custom spec")
    parser.add_argument("--settings", required=True, type=json.loads, help="the evaluate section's shared settings")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--fewshot", default="", help="few-shot exemplars (rule fewshot); '' for none")


def benchmark_prompts(args: argparse.Namespace) -> list[Prompt]:
    """The seeded sample of `settings.prompts` prompts of the named benchmark."""
    benchmark = benchmark_from_config(args.benchmark_name, args.benchmark)
    return load_prompts(benchmark, args.data_dir, limit=args.settings.get("prompts"), seed=args.seed)


def prompt_format(args: argparse.Namespace, tokenizer) -> PromptFormat:
    """The benchmark's prompt format: few-shot exemplars and stop strings for a base target."""
    return load_format(tokenizer, args.fewshot.strip() or None)
