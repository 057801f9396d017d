"""Feature-extraction throughput against the target's own forward pass, on real GSM8K rows.

Figures over the same sequences, one sequence at a time (batch 1): the model body's own causal
forward (`target.body`, Hugging Face's default mask), the adapter's `target.forward` (explicit
4-D mask and position ids), and `extract_features` end to end (Parquet
reading, the forward, dtype conversion, shard writing, vocabulary counting, publishing) for
bf16 and fp32 storage. The methods take turns for `--rounds` rounds and each reports its best
round, so load from other processes on a shared CPU biases none of them. Prints figures; it
is not a test. Extraction itself now runs `TargetModel.forward_batch`, rows of one context on top
of its cache; `benchmarks/extract_throughput.py` compares one row per forward with padded batches.

    python benchmarks/features_throughput.py --sequences 20 --threads 2 --rounds 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from taps import load_target
from taps.data import Source, prepare_dataset
from taps.features import extract_features
from taps.generate import chain


def _methods(target, data: Path, work: Path, sequences: list[torch.Tensor]) -> dict:
    """name -> a callable that processes every sequence once."""

    def each(run):
        return lambda: [run(ids) for ids in sequences]

    def extract(dtype):
        return lambda: extract_features(target, data, work / "features", dtype=dtype, draft_vocab_size=32768,
                                        progress=False)

    return {
        "model body forward (HF causal mask)": each(lambda ids: target.body(input_ids=ids[None])),
        "target.forward (adapter, 4-D mask)": each(lambda ids: target.forward(ids, chain(len(ids)), target.new_cache())),
        "extract_features, bfloat16 shards": extract(torch.bfloat16),
        "extract_features, float32 shards": extract(torch.float32),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="gemma-3-270m")
    parser.add_argument("--data-dir", default="/work/shared/data")
    parser.add_argument("--sequences", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    target = load_target(args.target)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.parquet"
        source = Source(name="gsm8k", kind="jsonl", path="gsm8k_train.jsonl", count=args.sequences)
        prepare_dataset([source], target.tokenizer, args.max_length, seed=0, out_path=data,
                        data_dir=args.data_dir, progress=False)
        sequences = [torch.tensor(ids, dtype=torch.long) for ids in pq.read_table(data)["input_ids"].to_pylist()]
        tokens = sum(len(ids) for ids in sequences)
        print(f"{args.target}: {len(sequences)} sequences, {tokens} tokens "
              f"(length {min(map(len, sequences))}-{max(map(len, sequences))}), "
              f"{torch.get_num_threads()} threads, {target.dtype}, best of {args.rounds} rounds")
        methods = _methods(target, data, Path(tmp), sequences)
        best = dict.fromkeys(methods, 0.0)
        with torch.no_grad():
            target.forward(sequences[0], chain(len(sequences[0])), target.new_cache())  # warm-up
            for _ in range(args.rounds):
                for name, run in methods.items():
                    start = time.perf_counter()
                    run()
                    best[name] = max(best[name], tokens / (time.perf_counter() - start))
        for name, rate in best.items():
            print(f"  {name:38s} {rate:8.1f} tokens/s   ({rate / best['target.forward (adapter, 4-D mask)']:.2f}x adapter)")


if __name__ == "__main__":
    main()
