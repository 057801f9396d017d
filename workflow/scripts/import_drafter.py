"""Import a released EAGLE-format drafter (directory or hub id) for a target, as our own checkpoint, in the dtype
it was released in."""

import argparse

from common import add_target_arg
from taps.eagle_format import load_eagle
from taps.target import load_target_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_arg(parser)
    parser.add_argument("--source", required=True, help="checkpoint directory or hub id (owner/name)")
    parser.add_argument("--backbone", required=True, choices=["eagle2", "hass"], help="the recipe that trained it")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    target = load_target_spec(args.target, device="cpu")
    drafter = load_eagle(args.source, target, backbone=args.backbone, dtype="checkpoint")  # bf16 stays bf16
    drafter.save(args.out)
    print(f"imported {args.source} ({drafter.d2t.numel()} draft tokens, {drafter.fc.weight.dtype}) -> {args.out}")


if __name__ == "__main__":
    main()
