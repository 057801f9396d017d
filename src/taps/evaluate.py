"""Evaluation: one composition on one benchmark at one temperature, against the vanilla loop.

For every prompt and turn the vanilla loop and the speculative loop run side by side, in the
same process on the same target, so their tokens/s compare fairly on any machine. The vanilla
run is also the reference: at temperature 0 the speculative output must equal it token for
token (a mismatch is a bug and stops the evaluation), and a multi-turn prompt (MT-Bench) is
conditioned on the target's own earlier answers, taken from the vanilla run. Both runs of a
turn draw from generators seeded by (seed, prompt index, turn).

Results are raw rows, ready for Parquet: one per decoding cycle, one per drafted node, and one
per prompt turn (tokens, verification passes, wall time of both loops). Acceptance length and
its confidence interval are computed from them by `taps.metrics`, never stored pre-averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from taps.benchmarks import Prompt, build_turn_prompt
from taps.generate import Proposer, speculative_generate, vanilla_generate
from taps.target import TargetModel


@dataclass(frozen=True)
class EvalConfig:
    """How a benchmark is decoded."""

    temperature: float = 0.0  # 0: greedy (checked token for token against vanilla); > 0: sampling
    max_new_tokens: int = 128  # per turn
    seed: int = 0  # seeds every turn's generators, with the prompt index and turn number

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"EvalConfig.temperature must be >= 0, got {self.temperature}")
        if self.max_new_tokens < 1:
            raise ValueError(f"EvalConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class EvalRows:
    """Raw evaluation records: lists of dicts, one table each."""

    cycles: list[dict]  # prompt, turn, cycle, accepted, emitted, nodes, drafter, seconds
    nodes: list[dict]  # prompt, turn, cycle, node, depth, confidence, prob, entropy, accepted, drafter
    turns: list[dict]  # prompt, turn, prompt_tokens, new_tokens, passes, seconds, vanilla_seconds, ...


def _generator(seed: int, prompt: int, turn: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + prompt * 101 + turn)


def evaluate_turn(target: TargetModel, proposer: Proposer, ids: torch.Tensor, config: EvalConfig,
                  prompt: int, turn: int):
    """Vanilla then speculative decoding of one turn; returns (vanilla, speculative) Generations."""
    vanilla = vanilla_generate(target, ids, config.max_new_tokens, config.temperature,
                               _generator(config.seed, prompt, turn))
    spec = speculative_generate(target, proposer, ids, config.max_new_tokens, config.temperature,
                                _generator(config.seed, prompt, turn))
    if config.temperature == 0 and spec.tokens != vanilla.tokens:
        raise RuntimeError(f"prompt {prompt}, turn {turn}: greedy speculative output differs from the target's "
                           "own greedy output; speculative decoding must be lossless (this is a bug)")
    return vanilla, spec


def evaluate(target: TargetModel, proposer: Proposer, prompts: list[Prompt], config: EvalConfig,
             progress: bool = True) -> EvalRows:
    """Decode every turn of every prompt with both loops and collect the raw rows."""
    rows = EvalRows([], [], [])
    tokenizer = target.tokenizer
    for index, prompt in enumerate(tqdm(prompts, desc="prompts", disable=not progress)):
        history: list[tuple[str, str]] = []
        for turn, text in enumerate(prompt.turns):
            ids = torch.tensor(tokenizer(build_turn_prompt(tokenizer, history, text),
                                         add_special_tokens=False).input_ids)
            vanilla, spec = evaluate_turn(target, proposer, ids, config, index, turn)
            key = {"benchmark": prompt.benchmark, "prompt": prompt.id, "turn": turn}
            rows.cycles += [{**key, **c} for c in spec.cycles]
            rows.nodes += [{**key, **n} for n in spec.nodes]
            rows.turns.append({
                **key, "prompt_tokens": len(ids), "new_tokens": len(spec.tokens) - 1, "passes": len(spec.cycles),
                "seconds": spec.seconds - spec.prefill_seconds,
                "vanilla_new_tokens": len(vanilla.tokens) - 1,
                "vanilla_seconds": vanilla.seconds - vanilla.prefill_seconds,
                "identical": spec.tokens == vanilla.tokens,
            })
            history.append((text, tokenizer.decode(vanilla.tokens, skip_special_tokens=True)))
    return rows
