"""Feature extraction throughput on Gemma-3-270M: one row per forward against padded batches.

    python benchmarks/extract_throughput.py --data results/data/gemma-3-270m/target/gsm8k_train.parquet

Runs `taps.features.extract_features` on the first --rows rows at each --batch-tokens value (1: one
row per forward), in order and again at the first value, and prints tokens/s (2 threads).
"""

import argparse
import tempfile

import torch

from taps.features import extract_features
from taps.target import load_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a training Parquet (rule regenerate or prepare_data)")
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--batch-tokens", type=int, nargs="+", default=[1, 4096])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    target = load_target("gemma-3-270m", device="cpu")
    for batch_tokens in [*args.batch_tokens, args.batch_tokens[0]]:
        with tempfile.TemporaryDirectory() as tmp:
            meta = extract_features(target, args.data, f"{tmp}/features", limit=args.rows, progress=False,
                                    batch_tokens=batch_tokens, d2t=torch.arange(8192))
        print(f"batch_tokens={batch_tokens}: {meta['computed_tokens']} tokens computed in {meta['seconds']:.1f} s "
              f"= {meta['tokens_per_second']:.0f} tok/s ({meta['n_tokens']} stored)", flush=True)


if __name__ == "__main__":
    main()
