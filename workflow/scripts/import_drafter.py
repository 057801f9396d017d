"""Import a released EAGLE-format drafter (directory or hub id) for a target, as our own checkpoint, in the dtype
it was released in."""

import argparse
import os

from taps.eagle_format import PICKLE, SAFETENSORS, load_eagle, resolve, saved_dtype
from taps.target import load_target_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="target.json written by the target rule")
    parser.add_argument("--source", required=True, help="checkpoint directory or hub id (owner/name)")
    parser.add_argument("--backbone", required=True, choices=["eagle2", "hass"], help="the recipe that trained it")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    directory = resolve(args.source)
    drafter = load_eagle(directory, load_target_spec(args.target, device="cpu"), backbone=args.backbone)
    weights = os.path.join(directory, SAFETENSORS)
    dtype = saved_dtype(weights if os.path.isfile(weights) else os.path.join(directory, PICKLE))
    drafter.save(args.out, dtype=dtype)  # as released (bf16, fp16), where the CPU target is fp32
    print(f"imported {args.source} ({drafter.d2t.numel()} draft tokens, {dtype}) -> {args.out}")


if __name__ == "__main__":
    main()
