"""Choose one target's draft vocabulary over all its training mixtures (the N most frequent tokens)."""

import argparse

from common import add_target_arg
from taps.intermediates import read_json
from taps.vocab import write_vocab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_arg(parser)
    parser.add_argument("--data", nargs="+", required=True, help="Parquet files written by prepare_data")
    parser.add_argument("--size", type=int, default=0, help="N; 0 keeps the full vocabulary")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    vocab_size = read_json(args.target, "target spec")["fingerprint"]["vocab_size"]
    d2t = write_vocab(args.data, vocab_size, args.size or None, args.out)
    print(f"draft vocabulary: {len(d2t)} of {vocab_size} target tokens")


if __name__ == "__main__":
    main()
