"""Choose one source's few-shot exemplars for a target without a chat template (none for one with)."""

import argparse
import json

from common import add_source_args, add_target_arg, source_conversations
from taps.prompts import FewShotFile, choose_exemplars, first_exchange
from taps.target import load_tokenizer_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_arg(parser)
    add_source_args(parser)
    parser.add_argument("--k", type=int, required=True, help="exemplars wanted")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    tokenizer = load_tokenizer_spec(args.target)
    indices = []
    if args.k and not getattr(tokenizer, "chat_template", None):
        conversations = source_conversations(args)
        indices = choose_exemplars(conversations, args.k, args.seed, args.source_name)
        exemplars = [first_exchange(conversations[i]) for i in indices]
    else:
        exemplars = []
    FewShotFile(args.source_name, indices, exemplars).write(args.out)
    print(json.dumps({"indices": indices, "exemplars": exemplars}, indent=2))


if __name__ == "__main__":
    main()
