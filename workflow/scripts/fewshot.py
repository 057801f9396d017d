"""Choose one source's few-shot exemplars for a target without a chat template (none for one with)."""

import argparse
import json

from taps.data import Source, load_source
from taps.prompts import FewShotFile, choose_exemplars, first_exchange
from taps.target import load_tokenizer_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="target.json written by the target rule")
    parser.add_argument("--source-name", required=True)
    parser.add_argument("--source", required=True, type=json.loads, help="the source's config entry")
    parser.add_argument("--k", type=int, required=True, help="exemplars wanted")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    tokenizer = load_tokenizer_spec(args.target)
    indices = []
    if args.k and not getattr(tokenizer, "chat_template", None):
        conversations = load_source(Source(name=args.source_name, **args.source), args.data_dir)
        indices = choose_exemplars(conversations, args.k, args.seed, args.source_name)
        exemplars = [first_exchange(conversations[i]) for i in indices]
    else:
        exemplars = []
    FewShotFile(args.source_name, indices, exemplars).write(args.out)
    print(json.dumps({"indices": indices, "exemplars": exemplars}, indent=2))


if __name__ == "__main__":
    main()
