"""Export a drafter in the layout SGLang loads for --speculative-algorithm EAGLE, in the dtype it was saved in."""

import argparse
import os

from common import add_target_arg
from taps.drafter import WEIGHTS, Drafter
from taps.eagle_format import save_eagle, saved_dtype
from taps.target import load_target_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_arg(parser)
    parser.add_argument("--drafter", required=True, help="drafter checkpoint directory")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dtype = saved_dtype(os.path.join(args.drafter, WEIGHTS))  # e.g. bf16, where the CPU target is fp32
    save_eagle(Drafter.load(args.drafter, load_target_spec(args.target, device="cpu")), args.out, dtype=dtype)
    print(f"exported {args.drafter} ({dtype}) -> {args.out}")


if __name__ == "__main__":
    main()
