"""Answer tokens/s of target regeneration: Hugging Face `generate` (left padding, every row recomputes the
few-shot prefix, stopped rows decoded to the end; the rule's engine until 2026-12-04) against
`taps.batch_decode` (the shared prefix once, stopped rows dropped), on the same batch of training prompts.

    python benchmarks/regenerate_throughput.py --target results/targets/gemma-3-270m/target.json \
        --fewshot results/prompts/gemma-3-270m/gsm8k_train.json --source-name gsm8k_train \
        --source '{"kind": "jsonl", "path": "gsm8k_train.jsonl", "question_field": "question", "answer_field": "answer"}' \
        [--prompts 32] [--batch-size 32] [--max-new-tokens 128] [--threads 2]

Prints each way's seconds and answer tokens/s, their ratio, and how many answers agree token for token.
Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from taps.answers import first_prompt, generate_batch, select
from taps.data import Source, load_source
from taps.generate import StopStrings, cut_new_tokens
from taps.prompts import FewShotFile, plain_format
from taps.target import load_target_spec


class _Stop(StoppingCriteria):
    """Per row: done once its new tokens hit a stop string."""

    def __init__(self, stop: StopStrings, width: int):
        self.stop, self.width = stop, width

    def __call__(self, input_ids, scores, **kwargs):
        return torch.tensor([self.stop.find(r, len(r) - 1) is not None for r in input_ids[:, self.width:].tolist()])


def hf_generate(target, prompts, max_new_tokens, stop):
    """The former rule: Hugging Face `generate`, left-padded, greedy."""
    pad = target.tokenizer.pad_token_id
    pad = pad if pad is not None else min(target.eos_token_ids or {0})
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                              eos_token_id=sorted(target.eos_token_ids) or None)
    with torch.no_grad():
        out = target.model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                    stopping_criteria=StoppingCriteriaList([_Stop(stop, width)]))
    return [cut_new_tokens([], row, max_new_tokens, target.eos_token_ids, stop) for row in out[:, width:].tolist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help="a target.json (rule target)")
    parser.add_argument("--fewshot", required=True, help="few-shot exemplars (rule fewshot)")
    parser.add_argument("--source-name", required=True)
    parser.add_argument("--source", required=True, type=json.loads, help="the source's reading keys (taps.data.Source)")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    target = load_target_spec(args.target)
    tok = target.tokenizer
    fewshot = FewShotFile.read(args.fewshot)
    fmt = plain_format(tok, fewshot.exemplars)
    stop = fmt.stop_strings(tok)
    conversations = load_source(Source(name=args.source_name, **args.source), args.data_dir)
    prompts = [first_prompt(c, tok, fmt) for c in select(args.source_name, conversations, args.prompts, 0,
                                                            fewshot.indices)]
    prompts.sort(key=lambda p: -len(p))
    print(f"{len(prompts)} prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens, "
          f"batch {args.batch_size}, {args.max_new_tokens} new tokens at most, {args.threads} threads")
    results = {}
    for name, run in (("hf-generate", hf_generate), ("batch-decode", generate_batch)):
        start, answers = time.perf_counter(), []
        for lo in range(0, len(prompts), args.batch_size):
            batch = prompts[lo: lo + args.batch_size]
            answers += run(target, batch, args.max_new_tokens, stop=stop) if name == "batch-decode" else \
                run(target, batch, args.max_new_tokens, stop)
        seconds = time.perf_counter() - start
        made = sum(len(t) for t, _ in answers)
        results[name] = (seconds, made / seconds, [t for t, _ in answers])
        print(f"{name:13s} {seconds:7.1f} s  {made} answer tokens  {made / seconds:6.1f} tok/s")
    same = sum(a == b for a, b in zip(results["hf-generate"][2], results["batch-decode"][2]))
    print(f"ratio batch-decode / hf-generate: {results['batch-decode'][1] / results['hf-generate'][1]:.2f}x; "
          f"{same}/{len(prompts)} answers equal token for token")


if __name__ == "__main__":
    main()
