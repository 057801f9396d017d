"""Train one drafter (EAGLE-2 or HASS) on a mixture of feature directories; resumable from --workdir."""

import argparse
import dataclasses
import json

from common import add_target_args, open_target
from taps.features import FeatureMixture
from taps.train import TrainConfig, train_drafter


def train_config(settings: dict, warm_start: str) -> TrainConfig:
    """The config's train entry as a TrainConfig; an unknown key names itself and the known ones."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise SystemExit(f"unknown train setting(s) {unknown}; known: {sorted(known)}")
    settings = {**settings, "warm_start": warm_start or None}
    if isinstance(settings.get("betas"), list):
        settings["betas"] = tuple(settings["betas"])
    return TrainConfig(**settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_args(parser)
    parser.add_argument("--features", required=True, nargs="+", help="feature directories (one per source)")
    parser.add_argument("--counts", nargs="*", type=int, default=[],
                        help="conversations taken from each directory, in order (default: all of one directory)")
    parser.add_argument("--settings", required=True, type=json.loads, help="TrainConfig fields, as JSON")
    parser.add_argument("--warm-start", default="", help="drafter directory to start from ('' for none)")
    parser.add_argument("--workdir", required=True,
                        help="holds state/, best/, metrics.parquet, val_metrics.parquet and the final drafter/")
    args = parser.parse_args()
    if args.counts and len(args.counts) != len(args.features):
        raise SystemExit(f"--counts gives {len(args.counts)} numbers for {len(args.features)} feature directories")
    if not args.counts and len(args.features) > 1:
        raise SystemExit("several feature directories need --counts")
    config = train_config(args.settings, args.warm_start.strip())
    target = open_target(args)
    features = (FeatureMixture(list(zip(args.features, args.counts)), target.fingerprint()) if args.counts
                else args.features[0])
    train_drafter(target, features, args.workdir, config)
    print(json.dumps(dataclasses.asdict(config), indent=2))


if __name__ == "__main__":
    main()
