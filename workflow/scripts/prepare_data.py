"""Tokenise one training mixture for one target into Parquet (input_ids, loss_mask, source)."""

import argparse
import json

from taps.data import Source, prepare_dataset
from taps.target import load_tokenizer_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="target.json written by the target rule")
    parser.add_argument("--sources", required=True, type=json.loads, help="{name: source config with count}")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--max-length", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    tokenizer = load_tokenizer_spec(args.target)
    sources = [Source(name=name, **spec) for name, spec in args.sources.items()]
    rows = prepare_dataset(sources, tokenizer, args.max_length, args.seed, args.out, data_dir=args.data_dir)
    print(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
