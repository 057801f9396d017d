"""Drafter training throughput on the real target, against this machine's fp32 matmul peak.

Prepares a few GSM8K training conversations, extracts their features, trains each backbone
for a fixed number of optimizer steps, and reports training tokens/s plus the FLOP rate this
implies as a fraction of a large fp32 matmul measured in the same run. FLOPs per trained token
are estimated as 6 x trainable parameters + 6 x H x V_draft (the drafter head forward and
backward through the frozen lm_head rows, plus the target distribution's forward), times the
unrolled steps for HASS. Prints figures; it is not a test.

    python benchmarks/train_throughput.py --sequences 16 --steps 6 --draft-vocab 8192
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from taps import load_target
from taps.data import Source, prepare_dataset
from taps.drafter import Drafter
from taps.features import extract_features
from taps.train import train_drafter
from taps.train_config import TrainConfig


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="gemma-3-270m")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--draft-vocab", type=int, default=8192)
    parser.add_argument("--batch-tokens", type=int, default=1024)
    args = parser.parse_args()
    torch.manual_seed(0)
    target = load_target(args.target, device="cpu", dtype=torch.float32)
    peak = matmul_gflops()
    print(f"{args.target}: {torch.get_num_threads()} threads, fp32 matmul 2048^3: {peak:.1f} GFLOP/s")
    trainable = sum(p.numel() for p in Drafter(target).parameters())  # fc + one decoder layer
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "train.parquet"
        source = Source(name="gsm8k", kind="jsonl", path="gsm8k_train.jsonl", count=args.sequences)
        prepare_dataset([source], target.tokenizer, 512, 0, data, data_dir=args.data_dir, progress=False)
        meta = extract_features(target, data, Path(work) / "features", dtype=torch.bfloat16,
                                draft_vocab_size=args.draft_vocab, progress=False)
        print(f"features: {meta['n_tokens']} tokens in {meta['seconds']:.1f} s = {meta['tokens_per_second']:.0f} tok/s")
        for backbone in ("eagle2", "hass"):
            config = TrainConfig(backbone=backbone, epochs=100, lr=1e-4, batch_tokens=args.batch_tokens,
                                 warmup_steps=1, draft_vocab_size=args.draft_vocab)
            start = time.perf_counter()
            metrics = train_drafter(target, str(Path(work) / "features"), str(Path(work) / backbone), config,
                                    progress=False, max_steps=args.steps)
            seconds = time.perf_counter() - start
            tokens = int(metrics["tokens"].sum())
            flops = (6 * trainable + 6 * target.hidden_size * args.draft_vocab) * config.steps * tokens
            print(f"{backbone:>6}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.0f} tok/s, "
                  f"~{flops / seconds / 1e9:.1f} GFLOP/s = {flops / seconds / 1e9 / peak:.0%} of the matmul peak; "
                  f"loss {metrics['loss'].iloc[0]:.2f} -> {metrics['loss'].iloc[-1]:.2f}")


if __name__ == "__main__":
    main()
