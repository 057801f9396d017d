"""How far apart the ends of every interpolation line sit, each from its initialisation (taps.average), and the
validation loss of every point of the line on its ends' held-out data (taps.validation)."""

import argparse
import json
import os

import pandas as pd

from common import add_target_args, open_target, train_config
from taps.average import line_distances
from taps.batching import split_sequences
from taps.shards import FeatureMixture
from taps.validation import line_losses


def held_out(parts: dict, config, fingerprint) -> dict:
    """dataset -> (name of its data, features, held-out ids): the sequences its training held out
    (`split_sequences` of the run's val_fraction and seed). Datasets of the same data (math and its seed-1 copy)
    share one entry, named after the first."""
    by_data, out = {}, {}
    for name, mix in parts.items():
        key = json.dumps(mix)
        if key not in by_data:
            shards = FeatureMixture([(d, c) for d, c in mix], fingerprint)
            by_data[key] = (name, shards, split_sequences(len(shards), config.val_fraction, config.seed)[1])
        out[name] = by_data[key]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_args(parser)
    parser.add_argument("--label", required=True, help="the target's name")
    parser.add_argument("--lines", type=json.loads, required=True, help="config interpolations: pair -> [first, second]")
    parser.add_argument("--points", type=json.loads, required=True,
                        help="backbone -> {pair: {alpha: drafter directory}}, the ends at 0 and 1")
    parser.add_argument("--val-data", type=json.loads, default={},
                        help="dataset -> [[feature directory, conversations], ...] of the lines' ends ({}: no losses)")
    parser.add_argument("--settings", type=json.loads, default={},
                        help="backbone -> its TrainConfig fields (the validation split and loss)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    target = open_target(args)
    rows = []
    for backbone, lines in args.points.items():
        config = train_config(args.settings[backbone]) if args.val_data else None
        sets = held_out(args.val_data, config, target.fingerprint()) if args.val_data else {}
        cache = {}  # (drafter, data) -> loss: an end shared by several lines is scored once
        for pair, (first, second) in args.lines.items():
            points = {float(a): d for a, d in lines[pair].items()}
            row = {"target": args.label, "backbone": backbone, "pair": pair, "first": first, "second": second,
                   **line_distances(points[0.0], points[1.0], target)}
            ends = {sets[d][0]: sets[d][1:] for d in (first, second) if d in sets and sets[d][2]}
            if ends:
                losses = line_losses(points, ends, target, config, cache)
                row |= {f"val loss at {a:g}": loss for a, loss in sorted(losses.items())}
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    pd.DataFrame(rows).to_parquet(f"{args.out}.tmp")
    os.replace(f"{args.out}.tmp", args.out)


if __name__ == "__main__":
    main()
