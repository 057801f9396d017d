"""Build the acceptance-length / speed table from every evaluation's saved rows."""

import argparse
import os

import pandas as pd

from taps.report import tau_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--evals", nargs="+", required=True, help="evaluation directories")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    turns = pd.concat([pd.read_parquet(os.path.join(d, "turns.parquet")) for d in args.evals], ignore_index=True)
    table = tau_table(turns, seed=args.seed)
    table.to_parquet(f"{args.out}.tmp")
    os.replace(f"{args.out}.tmp", args.out)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
