"""The interpolation table: distances between and from initialisations, tau and validation loss along each line
(taps.tables)."""

import argparse
import json
import os

import pandas as pd

from taps.figures import interpolation_points
from taps.intermediates import read_parquet
from taps.tables import interpolation_table, write_table

CAPTION = ("Interpolation lines (config interpolations): the ends' root-mean-square distance per parameter, each "
           "end's from its random initialisation and the initialisations' apart; mean tau over the benchmarks at "
           "T=0 at each alpha [95% bootstrap CI over prompts]; the validation loss at each alpha on the ends' "
           "held-out training sequences (the mean over the ends' data, each once).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--distances", nargs="+", required=True, help="rule interpolation_distances, one per target")
    parser.add_argument("--prompts", required=True, help="per-prompt frame (rule aggregate)")
    parser.add_argument("--interpolations", type=json.loads, required=True, help="pair -> {alpha: composition}")
    parser.add_argument("--out", required=True, help="the table's path without its extension")
    args = parser.parse_args()
    distances = pd.concat([read_parquet(p, "interpolation distances") for p in args.distances], ignore_index=True)
    points = interpolation_points(read_parquet(args.prompts, "table"), args.interpolations)
    write_table(interpolation_table(distances, points), args.out, CAPTION)
    print(open(f"{args.out}.md").read())


if __name__ == "__main__":
    main()
