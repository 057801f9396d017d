"""How far apart the ends of every interpolation line sit, each from its initialisation (taps.average), and the
validation loss of every point of the line on its ends' held-out data (taps.validation)."""

import argparse
import json
import os

import pandas as pd

from common import add_target_args, open_target
from taps.average import line_distances
from taps.batching import split_sequences
from taps.shards import FeatureMixture
from taps.train_config import TrainConfig
from taps.validation import line_losses


def val_sets(datasets: list[str], parts: dict, config: TrainConfig, fingerprint) -> list:
    """(features, held-out ids) of each dataset's mixture, once per distinct data (math and its seed-1 copy share
    theirs): the sequences training held out (`split_sequences` of the run's val_fraction and seed)."""
    sets = {}
    for name in datasets:
        key = json.dumps(parts[name])
        if key not in sets:
            shards = FeatureMixture([(d, c) for d, c in parts[name]], fingerprint)
            sets[key] = (shards, split_sequences(len(shards), config.val_fraction, config.seed)[1])
    return [s for s in sets.values() if s[1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_args(parser)
    parser.add_argument("--label", required=True, help="the target's name")
    parser.add_argument("--lines", type=json.loads, required=True, help="config interpolations: pair -> [first, second]")
    parser.add_argument("--drafters", type=json.loads, required=True, help="backbone -> {name: drafter directory}")
    parser.add_argument("--points", type=json.loads, default={},
                        help="backbone -> {pair: {alpha: drafter directory}}: validation loss along each line")
    parser.add_argument("--val-data", type=json.loads, default={},
                        help="dataset -> [[feature directory, conversations], ...] of the lines' ends ({}: no losses)")
    parser.add_argument("--settings", type=json.loads, default={},
                        help="backbone -> its TrainConfig fields (the validation split and loss)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    target = open_target(args)
    rows = []
    for backbone, dirs in args.drafters.items():
        for pair, (first, second) in args.lines.items():
            row = {"target": args.label, "backbone": backbone, "pair": pair, "first": first, "second": second,
                   **line_distances(dirs[first], dirs[second], target)}
            if args.val_data:
                config = TrainConfig(**{k: tuple(v) if k == "betas" else v for k, v in args.settings[backbone].items()})
                sets = val_sets([first, second], args.val_data, config, target.fingerprint())
                points = {float(a): d for a, d in args.points[backbone][pair].items()}
                losses = line_losses(points, sets, target, config) if sets else {}
                row |= {f"val loss at {a:g}": loss for a, loss in sorted(losses.items())}
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    pd.DataFrame(rows).to_parquet(f"{args.out}.tmp")
    os.replace(f"{args.out}.tmp", args.out)


if __name__ == "__main__":
    main()
