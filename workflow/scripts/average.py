"""Average N drafters of one target point-wise into one checkpoint."""

import argparse

from common import add_target_arg
from taps.average import average_checkpoints
from taps.target import load_target_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_arg(parser)
    parser.add_argument("--members", nargs="+", required=True, help="drafter directories")
    parser.add_argument("--weights", nargs="+", type=float, default=None, help="default: uniform")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    average_checkpoints(args.members, args.out, load_target_spec(args.target, device="cpu"), args.weights)


if __name__ == "__main__":
    main()
