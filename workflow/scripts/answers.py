"""One source's training rows, answered by the dataset's text or written by the target (regenerate)."""

import argparse
import json

import torch

from common import add_target_args
from taps.answers import AnswerConfig, prepare_source
from taps.data import Source, load_source
from taps.prompts import FewShotFile, plain_format
from taps.target import load_target_spec, load_tokenizer_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_args(parser)
    parser.add_argument("--source-name", required=True)
    parser.add_argument("--source", required=True, type=json.loads, help="the source's reading keys (taps.data.Source)")
    parser.add_argument("--count", type=int, required=True, help="conversations to take (the most any mixture takes)")
    parser.add_argument("--fewshot", required=True, help="exemplars written by the fewshot rule")
    parser.add_argument("--settings", required=True, type=json.loads, help="taps.answers.AnswerConfig fields")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    config = AnswerConfig(**args.settings)
    target = None
    if config.responses == "target":
        torch.set_num_threads(args.threads)
        target = load_target_spec(args.target, device=args.device)
    tokenizer = target.tokenizer if target is not None else load_tokenizer_spec(args.target)
    fewshot = FewShotFile.read(args.fewshot)
    conversations = load_source(Source(name=args.source_name, **args.source), args.data_dir)
    summary = prepare_source(args.source_name, conversations, args.count, args.seed, tokenizer,
                             plain_format(tokenizer, fewshot.exemplars), config, args.out, target=target,
                             exclude=fewshot.indices)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
