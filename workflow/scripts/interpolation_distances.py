"""How far apart the ends of every interpolation line sit, and each from its initialisation (taps.average)."""

import argparse
import json
import os

import pandas as pd

from common import add_target_args, open_target
from taps.average import line_distances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_args(parser)
    parser.add_argument("--label", required=True, help="the target's name")
    parser.add_argument("--lines", type=json.loads, required=True, help="config interpolations: pair -> [first, second]")
    parser.add_argument("--drafters", type=json.loads, required=True, help="backbone -> {name: drafter directory}")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    target = open_target(args)
    rows = [{"target": args.label, "backbone": backbone, "pair": pair, "first": first, "second": second,
             **line_distances(dirs[first], dirs[second], target)}
            for backbone, dirs in args.drafters.items() for pair, (first, second) in args.lines.items()]
    pd.DataFrame(rows).to_parquet(f"{args.out}.tmp")
    os.replace(f"{args.out}.tmp", args.out)


if __name__ == "__main__":
    main()
