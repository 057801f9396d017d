"""Run the target over one tokenised dataset and store its last hidden states as feature shards."""

import argparse
import json

import torch

from taps.features import extract_features
from taps.vocab import load_vocab
from common import add_target_args, open_target

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_args(parser)
    parser.add_argument("--data", required=True, help="Parquet written by prepare_data")
    parser.add_argument("--vocab", required=True, help="draft vocabulary written by the draft_vocab rule")
    parser.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    parser.add_argument("--shard-tokens", type=int, default=65536)
    parser.add_argument("--batch-tokens", type=int, default=4096, help="padded tokens per target forward")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    target = open_target(args)
    summary = extract_features(target, args.data, args.out, shard_tokens=args.shard_tokens, dtype=DTYPES[args.dtype],
                               d2t=load_vocab(args.vocab), batch_tokens=args.batch_tokens)
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
