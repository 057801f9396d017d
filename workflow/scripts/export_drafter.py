"""Export a drafter in the layout SGLang loads for --speculative-algorithm EAGLE, in the dtype it was saved in."""

import argparse
import os

from safetensors.torch import load_file

from taps.drafter import WEIGHTS, Drafter
from taps.eagle_format import save_eagle
from taps.target import load_target_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="target.json written by the target rule")
    parser.add_argument("--drafter", required=True, help="drafter checkpoint directory")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    saved = load_file(os.path.join(args.drafter, WEIGHTS))["fc.weight"].dtype  # e.g. bf16 while the CPU target is fp32
    save_eagle(Drafter.load(args.drafter, load_target_spec(args.target, device="cpu")), args.out, dtype=saved)
    print(f"exported {args.drafter} ({saved}) -> {args.out}")


if __name__ == "__main__":
    main()
