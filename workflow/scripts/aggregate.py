"""Gather every evaluation's raw rows into the tidy Parquet frames of results/tables (taps.aggregate)."""

import argparse
import os

from taps.aggregate import aggregate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--evals", nargs="+", required=True, help="evaluation directories")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outs", nargs="+", required=True, help="<frame>.parquet paths, one per frame")
    args = parser.parse_args()
    frames = aggregate(args.evals, seed=args.seed)
    for out in args.outs:
        name = os.path.basename(out).removesuffix(".parquet")
        frames[name].to_parquet(f"{out}.tmp")
    for out in args.outs:  # all written before any is in place
        os.replace(f"{out}.tmp", out)
    print(frames["evaluations"].to_string(index=False))


if __name__ == "__main__":
    main()
