"""Replay: a proposer's acceptance lengths without a verification pass per cycle, at any temperature.

At T=0 the target's output does not depend on the drafter: it is the greedy continuation the
vanilla loop produced (the reference). Greedy verification of a tree accepts the path that
spells the longest prefix of the reference's remainder and then emits the reference's next
token. So a tree can be scored by walking it along the reference (`taps.tree.follow`); the
only target work left is the features the drafters condition on, which one prefill-style pass
over prompt + reference gives, instead of one target pass per cycle.

That pass also checks the reference: the target's argmax at every position must be the next
reference token, and the reference must end exactly where the loops end generation (EOS, a
stop string or max_new_tokens; `taps.generate.cut_new_tokens`). A wrong reference (another
target, another max_new_tokens, other stop strings) is refused rather than scored. In bf16 a
one-pass argmax can differ from the vanilla loop's at a near-tie (other shapes, other rounding):
`reference_features` returns the disagreeing positions instead of raising, for an evaluation
that records them (`taps.evaluate.EvalConfig.on_mismatch`) and scores the turn against the
reference, the vanilla output, all the same.

The engine takes the drafters' features from its tree passes, replay from one pass over the
sequence; they differ by float rounding only, so trees and acceptance lengths are the same
unless two of a drafter's candidates tie to within rounding. Tests check that replay's rows
equal the engine's on the tiny target and on Gemma, and `taps.evaluate` compares them again on
every prompt it times with the engine.

At T > 0 the same walk is exact in law. Sampling verification with point-mass proposals
(`taps.verify`) accepts child x of a node with probability p(x) and otherwise draws from p
restricted to the tokens not tried: each try is an exact draw from p. So one cycle is
distributed as "draw y ~ p at the root; move to the first child holding y, if any; repeat; emit
y as the bonus where no child holds it". Drawing the target's whole continuation first (the
vanilla loop's sample, `reference`) and walking each tree along it (`follow(..., first_copy=True)`:
a duplicate sibling is never accepted at T > 0) gives every cycle, and so the whole run, the
engine's joint law of tokens and acceptance lengths, because the drafters' trees depend on the
context and never on the target's randomness. The emitted tokens are then the target's own sample
(lossless by construction), and every composition replayed along one sample is measured on the
same contexts, a paired comparison. `tests/test_sampling.py` checks the law against the engine's
by a chi-square test, and that the greedy walk (every copy followed) fails it.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from taps.compose import candidate_scores
from taps.generate import (Generation, Proposer, SharedPrefix, StopStrings, commit_prompt, cut_new_tokens, record_cycle,
                           run_prompt)
from taps.target import TargetModel
from taps.tree import follow


def _check_end(reference: list[int], max_new_tokens: int, eos: set[int], stop: StopStrings | None) -> None:
    """Raises unless generation ends exactly at the reference's last token (not before, not after)."""
    kept, why = cut_new_tokens([], reference, max_new_tokens, eos, stop)
    if not reference or len(kept) < len(reference) or not why:
        ends = f"ends after token {len(kept) - 1} ({why})" if why else "does not end"
        raise ValueError(f"replay: a reference of {len(reference)} tokens must end at EOS, at a stop string or at "
                         f"max_new_tokens={max_new_tokens}, and nowhere earlier, but generation {ends}; build it "
                         "with the vanilla loop and the same max_new_tokens and stop strings")


def reference_features(target: TargetModel, prompt: Tensor, reference: list[int], chunk: int = 64,
                       prefix: SharedPrefix | None = None) -> tuple[Tensor, dict[int, int]]:
    """Features of prompt + reference[:-1] ([L + n - 1, H]), and {i: the target's argmax} at every i
    where reference[i] is not the target's argmax after what precedes it (the full-vocabulary head,
    a chunk of rows at a time); {} for the target's own greedy continuation. `prefix`: a shared
    prompt prefix whose cache the pass reuses, as the loops' prefill does (`taps.generate.SharedPrefix`)."""
    seq = torch.cat([prompt, torch.tensor(reference[:-1], dtype=prompt.dtype)])
    features = run_prompt(target, seq, prefix)[1]
    first = prompt.numel() - 1  # this row predicts reference[0]
    disagree = {}
    for lo in range(first, seq.numel(), chunk):
        got = target.logits(features[lo: lo + chunk]).argmax(-1).tolist()
        disagree |= {i: have for i, (want, have) in enumerate(zip(reference[lo - first:], got), start=lo - first)
                     if want != have}
    return features, disagree


def checked_features(target: TargetModel, prompt: Tensor, reference: list[int], chunk: int = 64,
                     prefix: SharedPrefix | None = None) -> Tensor:
    """`reference_features`' features; raises unless every reference token is the target's argmax."""
    features, disagree = reference_features(target, prompt, reference, chunk, prefix)
    if disagree:
        i = min(disagree)
        raise ValueError(f"replay: the reference is not this target's greedy continuation: token {i} is "
                         f"{reference[i]} but the target's argmax is {disagree[i]}; build it with the same target "
                         "and prompt")
    return features


def sample_features(target: TargetModel, prompt: Tensor, reference: list[int],
                    prefix: SharedPrefix | None = None) -> Tensor:
    """Features of prompt + reference[:-1] ([L + n - 1, H]) for a sampled reference (T > 0), which no argmax
    check applies to."""
    return run_prompt(target, torch.cat([prompt, torch.tensor(reference[:-1], dtype=prompt.dtype)]), prefix)[1]


@torch.no_grad()
def replay_generate(
    target: TargetModel,
    proposer: Proposer,
    prompt: Tensor,
    reference: list[int],
    max_new_tokens: int,
    eos_token_ids: set[int] | None = None,
    stop: StopStrings | None = None,
    features: Tensor | None = None,
    prefix: SharedPrefix | None = None,
    sampled: bool = False,
) -> Generation:
    """The speculative loop's records for `proposer`, scored along the target's own output.

    reference: the vanilla loop's tokens for `prompt` (`Generation.tokens`, same max_new_tokens,
    EOS and stop strings): its greedy output, or with `sampled` its sample at the temperature the
    records stand for (module docstring). features: `checked_features(target, prompt, reference)`
    (`sample_features` when `sampled`), when several proposers replay the same turn (computed here
    when None). prefix: the shared prompt prefix those features were computed on, whose drafter
    state is then reused too. Returns the Generation `speculative_generate` would return (at T=0
    the same; at T > 0 one of the same law): tokens, cycle rows and node rows, except that
    `seconds` time the drafting alone. A proposer that keeps one of several candidate trees
    (`candidates`, set by routing) also gets one `candidates` row per cycle: each tree's signals
    and the drafted tokens it would have had accepted (`taps.compose.candidate_scores`).
    """
    eos = target.eos_token_ids if eos_token_ids is None else eos_token_ids
    _check_end(reference, max_new_tokens, eos, stop)
    start = time.perf_counter()
    proposer.reset()
    if features is None:
        features = (sample_features(target, prompt, reference, prefix) if sampled
                    else checked_features(target, prompt, reference, prefix=prefix))
    n_prompt = prompt.numel()
    commit_prompt(proposer, features[:n_prompt], torch.cat([prompt[1:], torch.tensor(reference[:1], dtype=prompt.dtype)]),
                  prompt, prefix)
    steps = getattr(proposer, "steps", 0)
    out = Generation(tokens=reference[:1], prefill_seconds=time.perf_counter() - start)
    out.stopped = cut_new_tokens([], out.tokens, max_new_tokens, eos, stop)[1]
    while not out.stopped:
        tick = time.perf_counter()
        done = len(out.tokens)
        tree = proposer.propose(reference[done - 1])
        path = follow(tree, reference[done:], first_copy=sampled)
        new = reference[done: done + len(path)]  # accepted tokens and the target's own next token
        emitted, out.stopped = cut_new_tokens(out.tokens, new, max_new_tokens, eos, stop)
        out.tokens += emitted
        record_cycle(out, tree, path, len(emitted), time.perf_counter() - tick)
        if getattr(proposer, "candidates", None):
            out.candidates.append({"cycle": len(out.cycles) - 1,
                                   **candidate_scores(proposer.candidates, reference[done:])})
        if out.stopped:  # at the reference's end: `_check_end` holds
            break
        rows = [n_prompt + done - 1 + i for i in range(len(path))]  # root and accepted nodes' positions
        proposer.commit(features[rows], torch.tensor(new))
    out.drafter_steps = getattr(proposer, "steps", 0) - steps
    out.seconds = time.perf_counter() - start
    return out
