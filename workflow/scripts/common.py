"""What the workflow scripts share: their repeated arguments, the target a rule names, a source's
conversations, a benchmark's prompts and a train entry's TrainConfig.

Each script runs as `python workflow/scripts/<name>.py`, so this directory is on sys.path.
"""

import argparse
import dataclasses
import json

import torch

from taps.benchmarks import Prompt, benchmark_from_config, load_prompts
from taps.data import Conversation, Source, load_source
from taps.prompts import PromptFormat, load_format
from taps.target import TargetModel, load_target_spec
from taps.train_config import TrainConfig


def add_target_arg(parser: argparse.ArgumentParser) -> None:
    """--target: the target.json a script reads (alone: its tokenizer or a CPU copy of the target)."""
    parser.add_argument("--target", required=True, help="target.json written by the target rule")


def add_target_args(parser: argparse.ArgumentParser) -> None:
    """--target, --device, --threads: the target a script runs (`open_target`)."""
    add_target_arg(parser)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)


def open_target(args: argparse.Namespace, fp32_logits: bool = False) -> TargetModel:
    """Set the thread count, then load the target from its target.json (`fp32_logits`: TargetModel.logits)."""
    torch.set_num_threads(args.threads)
    return load_target_spec(args.target, device=args.device, fp32_logits=fp32_logits)


def add_settings_arg(parser: argparse.ArgumentParser, help: str) -> None:
    """--settings: a config section's fields, as one JSON argument (`help` names them)."""
    parser.add_argument("--settings", required=True, type=json.loads, help=help)


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """--data-dir, --seed: where datasets are read, and the seed that samples them."""
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seed", type=int, required=True)


def add_source_args(parser: argparse.ArgumentParser) -> None:
    """--source-name, --source, --data-dir, --seed: one training source (`source_conversations`), seeded."""
    parser.add_argument("--source-name", required=True, help="the source's name in config sources")
    parser.add_argument("--source", required=True, type=json.loads, help="the source's reading keys (taps.data.Source)")
    add_data_args(parser)


def source_conversations(args: argparse.Namespace) -> list[Conversation]:
    """Every conversation of the named source, its relative paths read under --data-dir."""
    return load_source(Source(name=args.source_name, **args.source), args.data_dir)


def add_benchmark_args(parser: argparse.ArgumentParser) -> None:
    """--benchmark-name, --benchmark, --settings, --data-dir, --seed, --fewshot: one benchmark's prompts."""
    parser.add_argument("--benchmark-name", required=True)
    parser.add_argument("--benchmark", required=True, type=json.loads, help="null (built-in) or a custom spec")
    add_settings_arg(parser, "the evaluate section's shared settings")
    add_data_args(parser)
    parser.add_argument("--fewshot", default="", help="few-shot exemplars (rule fewshot); '' for none")


def benchmark_prompts(args: argparse.Namespace) -> list[Prompt]:
    """The seeded sample of `settings.prompts` prompts of the named benchmark."""
    benchmark = benchmark_from_config(args.benchmark_name, args.benchmark)
    return load_prompts(benchmark, args.data_dir, limit=args.settings.get("prompts"), seed=args.seed)


def prompt_format(args: argparse.Namespace, tokenizer) -> PromptFormat:
    """The benchmark's prompt format: few-shot exemplars and stop strings for a base target."""
    return load_format(tokenizer, args.fewshot.strip() or None)


def train_config(settings: dict, warm_start: str | None = None) -> TrainConfig:
    """The config's train entry as a TrainConfig; an unknown key names itself and the known ones."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise SystemExit(f"unknown train setting(s) {unknown}; known: {sorted(known)}")
    settings = {**settings, "warm_start": warm_start or None}
    if isinstance(settings.get("betas"), list):
        settings["betas"] = tuple(settings["betas"])
    return TrainConfig(**settings)
