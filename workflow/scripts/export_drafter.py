"""Export a drafter in the layout SGLang loads for --speculative-algorithm EAGLE."""

import argparse

from taps.drafter import Drafter
from taps.eagle_format import save_eagle
from taps.target import load_target_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="target.json written by the target rule")
    parser.add_argument("--drafter", required=True, help="drafter checkpoint directory")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    save_eagle(Drafter.load(args.drafter, load_target_spec(args.target, device="cpu")), args.out)
    print(f"exported {args.drafter} -> {args.out}")


if __name__ == "__main__":
    main()
