"""The tree (total_tokens, depth) of the most predicted tokens/s for one drafter on this machine (taps.tune),
from development prompts of the drafter's source; written as JSON for the compositions with `tree: tuned`."""

import argparse
import json
import os
import tempfile

import torch

from common import add_settings_arg, add_source_args, add_target_args, open_target, prompt_format, source_conversations
from taps.answers import development_prompts
from taps.drafter import Drafter
from taps.evaluate import shared_prefix
from taps.prompts import FewShotFile
from taps.tune import TuneConfig, tune_tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_args(parser)
    parser.add_argument("--drafter", required=True, help="the drafter's directory")
    add_source_args(parser)  # the source the drafter trained on
    parser.add_argument("--trained", type=int, required=True, help="conversations of the source any mixture takes")
    parser.add_argument("--fewshot", required=True, help="the source's exemplars (rule fewshot)")
    add_settings_arg(parser, "taps.tune.TuneConfig fields")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    config = TuneConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.settings.items()})
    target = open_target(args)
    fmt = prompt_format(args, target.tokenizer)
    conversations = source_conversations(args)
    prompts = development_prompts(args.source_name, conversations, target.tokenizer, fmt, config.dev_prompts,
                                  args.seed, args.trained, exclude=FewShotFile.read(args.fewshot).indices)
    tuned = tune_tree(target, Drafter.load(args.drafter, target), [torch.tensor(p) for p in prompts], config,
                      stop=fmt.stop_strings(target.tokenizer), prefix=shared_prefix(target, fmt))
    tuned |= {"drafter": args.drafter, "source": args.source_name, "threads": args.threads}
    print(json.dumps({"tree": tuned["tree"], "predicted": tuned["predicted"]}, indent=2))
    with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(os.path.abspath(args.out)), delete=False) as f:
        json.dump(tuned, f, indent=2)
    os.replace(f.name, args.out)


if __name__ == "__main__":
    main()
