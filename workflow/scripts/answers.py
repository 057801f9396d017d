"""One source's training rows, answered by the dataset's text or written by the target (regenerate)."""

import argparse
import json

from common import add_settings_arg, add_source_args, add_target_args, open_target, source_conversations
from taps.answers import AnswerConfig, prepare_source
from taps.prompts import FewShotFile, plain_format
from taps.target import load_tokenizer_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_args(parser)
    add_source_args(parser)
    parser.add_argument("--count", type=int, required=True, help="conversations to take (the most any mixture takes)")
    parser.add_argument("--fewshot", required=True, help="exemplars written by the fewshot rule")
    add_settings_arg(parser, "taps.answers.AnswerConfig fields")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    config = AnswerConfig(**args.settings)
    target = open_target(args) if config.responses == "target" else None
    tokenizer = target.tokenizer if target is not None else load_tokenizer_spec(args.target)
    fewshot = FewShotFile.read(args.fewshot)
    conversations = source_conversations(args)
    summary = prepare_source(args.source_name, conversations, args.count, args.seed, tokenizer,
                             plain_format(tokenizer, fewshot.exemplars), config, args.out, target=target,
                             exclude=fewshot.indices)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
