"""Train one drafter (EAGLE-2 or HASS) on one features directory; resumable from --workdir."""

import argparse
import dataclasses
import json

from common import add_target_args, open_target
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
    parser.add_argument("--features", required=True)
    parser.add_argument("--settings", required=True, type=json.loads, help="TrainConfig fields, as JSON")
    parser.add_argument("--warm-start", default="", help="drafter directory to start from ('' for none)")
    parser.add_argument("--workdir", required=True, help="holds state/, metrics.parquet and the final drafter/")
    args = parser.parse_args()
    config = train_config(args.settings, args.warm_start.strip())
    target = open_target(args)
    train_drafter(target, args.features, args.workdir, config)
    print(json.dumps(dataclasses.asdict(config), indent=2))


if __name__ == "__main__":
    main()
