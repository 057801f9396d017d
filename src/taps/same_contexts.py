"""Paired comparisons on the same cycles: every drafter's tree scored on identical contexts.

A replayed routed run grows every drafter's tree at every cycle and scores each against the target's own
continuation, its greedy output at T=0 or its sample at T > 0 (`taps.compose.candidate_scores`, gathered
by `taps.aggregate.routing_rows`).
So two routing signals, or two experts, can be compared cycle by cycle on exactly the same contexts,
instead of across runs whose contexts drift apart after their first cycle:

- claim (f), `signal_counts`: the tokens per pass confidence routing and entropy routing would give
  on the same cycles, each cycle scored by the acceptance of the tree each signal picks;
- claim (g), `step_counts`: the matched and the other expert's conditional acceptance at step k, in
  log-odds, minus the same at step 1, both experts' rates taken over the same cycles at every step.

Only uncut cycles count (`uncut`): near a turn's end the reference's remainder bounds what a tree can
accept, which would count as failures at deep steps. Every function is pure over the routing frame of
one setting (target, backbone, temperature) and one routed run, and returns `PairedCounts`: per-prompt
counts in the form `taps.metrics`' paired ratio bootstrap takes (prompts paired and resampled within
each benchmark), the statistic, and its value on the data.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import pandas as pd

SIGNALS = ("confidence", "entropy")  # as taps.compose.SIGNALS (not imported: it would pull in torch)
RUN = ["target", "backbone", "temperature", "composition"]
CLIP = 1e-3  # step_counts' log-odds: rates clipped to [CLIP, 1 - CLIP]


@dataclass(frozen=True)
class PairedCounts:
    """Per-prompt counts of a paired comparison and its statistic; `args` feed `taps.metrics`' paired
    ratio functions: paired_ratio_test(*pc.args, seed=...) -> (value, low, high, p)."""

    numerators: dict[Hashable, np.ndarray]  # {key: [prompts]}, prompts aligned across a stratum's keys
    denominators: dict[Hashable, np.ndarray]  # {key: [prompts]}
    strata: dict[Hashable, str]  # {key: benchmark}
    statistic: Callable[[dict[Hashable, np.ndarray]], np.ndarray]  # element-wise over {key: ratios}
    value: float  # the statistic of the data's ratios (what the bootstrap returns first)
    ratios: dict[Hashable, float]  # {key: sum(numerators) / sum(denominators)} on the data
    cycles: int  # cycles compared: every uncut cycle (f), or |S_k| (g)

    @property
    def args(self) -> tuple:
        return self.numerators, self.denominators, self.strata, self.statistic


def uncut(routing: pd.DataFrame) -> pd.DataFrame:
    """The cycles whose scores the turn's end did not cut: remaining >= levels + 1, room for the longest
    path a tree can accept and the target's next token (`taps.aggregate.routing_rows`)."""
    return routing[routing.remaining >= routing.levels + 1]


def picks(routing: pd.DataFrame, signal: str) -> np.ndarray:
    """[cycles] the tree `taps.compose.route` keeps on each row: highest mean confidence or lowest mean
    entropy, ties to the lower index, a tree with no drafted node (NaN signal) worst."""
    if signal not in SIGNALS:
        raise ValueError(f"unknown routing signal {signal!r}; known: {', '.join(SIGNALS)}")
    values = routing[[f"{signal}_{i}" for i in range(_drafters(routing))]].to_numpy(float)  # [cycles, drafters]
    scores = np.nan_to_num(values if signal == "confidence" else -values, nan=-np.inf)
    return scores.argmax(axis=1)  # argmax takes the first maximum: ties go to the lower index


def signal_counts(routing: pd.DataFrame) -> PairedCounts | None:
    """Claim (f) on the same cycles: keys (signal, benchmark); numerators, per prompt, the tokens a pass
    would give with the tree the signal picks (accepted + 1, summed over the prompt's uncut cycles);
    denominators the prompt's uncut cycles, shared by both signals. Statistic: the mean over benchmarks
    of tau_confidence - tau_entropy. None when no cycle is uncut."""
    if routing.empty:
        return None
    rows = uncut(_one_run(routing))
    if rows.empty:
        return None
    accepted = rows[[f"accepted_{i}" for i in range(_drafters(rows))]].to_numpy(float)  # [cycles, drafters]
    tokens = {s: accepted[np.arange(len(rows)), picks(rows, s)] + 1 for s in SIGNALS}
    per_prompt = rows[["benchmark", "prompt"]].assign(cycles=1, **tokens).groupby(["benchmark", "prompt"]).sum()
    num, den, strata = {}, {}, {}
    for bench, group in per_prompt.groupby(level="benchmark"):
        for s in SIGNALS:
            num[(s, bench)], den[(s, bench)] = group[s].to_numpy(float), group.cycles.to_numpy(float)
            strata[(s, bench)] = bench
    benches = list(dict.fromkeys(strata.values()))

    def confidence_minus_entropy(r):
        return np.mean([r[("confidence", b)] - r[("entropy", b)] for b in benches], axis=0)

    return _paired(num, den, strata, confidence_minus_entropy, len(rows))


def step_counts(routing: pd.DataFrame, benchmark: str, matched: int, other: int, k: int) -> PairedCounts | None:
    """Claim (g) on `benchmark` with the same cycles for both experts (drafter indices `matched`, `other`).

    S_j: the uncut cycles where both experts accepted >= j - 1 drafted tokens (both reached step j);
    the rate of expert e at step j is #(S_j with accepted_e >= j) / |S_j|. Keys (e, j, benchmark) for j in
    (1, k), e in (matched, other);
    numerators, per prompt, the cycles of S_j expert e passed; denominators |S_j| of the prompt, the
    same for both experts. Statistic: [logit r_m(k) - logit r_o(k)] - [logit r_m(1) - logit r_o(1)],
    rates clipped to [CLIP, 1 - CLIP] (a rate of 0 or 1 gives a finite log-odds). `cycles` is |S_k|,
    for the caller's minimum. None when the benchmark has no uncut cycle.
    """
    if routing.empty:
        return None
    rows = uncut(_one_run(routing))
    rows = rows[rows.benchmark == benchmark]
    n, levels = _drafters(routing), int(routing.levels.max())
    if matched == other or not {matched, other} <= set(range(n)):
        raise ValueError(f"step_counts: matched and other must be two distinct drafters of 0..{n - 1}, "
                         f"got {matched} and {other}")
    if not 2 <= k <= levels:
        raise ValueError(f"step_counts: step k must lie in 2..{levels} (the tree's draft levels), got {k}")
    if rows.empty:
        return None
    acc = {e: rows[f"accepted_{e}"].to_numpy() for e in (matched, other)}
    both = np.minimum(acc[matched], acc[other])
    columns = {}
    for j in (1, k):
        columns[f"reached_{j}"] = both >= j - 1  # S_j
        for e in (matched, other):
            columns[f"passed_{e}_{j}"] = (both >= j - 1) & (acc[e] >= j)
    per_prompt = pd.DataFrame(columns, index=rows.prompt.to_numpy()).groupby(level=0).sum().astype(float)
    num = {(e, j, benchmark): per_prompt[f"passed_{e}_{j}"].to_numpy() for e in (matched, other) for j in (1, k)}
    den = {(e, j, benchmark): per_prompt[f"reached_{j}"].to_numpy() for e in (matched, other) for j in (1, k)}

    def log_odds_growth(r):
        lo = {(e, j): _logit(r[(e, j, benchmark)]) for e in (matched, other) for j in (1, k)}
        return (lo[(matched, k)] - lo[(other, k)]) - (lo[(matched, 1)] - lo[(other, 1)])

    return _paired(num, den, dict.fromkeys(num, benchmark), log_odds_growth, int(per_prompt[f"reached_{k}"].sum()))


def _logit(rate: np.ndarray) -> np.ndarray:
    rate = np.clip(rate, CLIP, 1 - CLIP)  # NaN (a replicate with no cycle at the step) stays NaN
    return np.log(rate) - np.log1p(-rate)


def _paired(num: dict, den: dict, strata: dict, statistic: Callable, cycles: int) -> PairedCounts:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = {key: float(num[key].sum() / den[key].sum()) for key in num}
        value = float(np.asarray(statistic({key: np.array([r]) for key, r in ratios.items()}))[0])
    return PairedCounts(num, den, strata, statistic, value, ratios, cycles)


def _drafters(routing: pd.DataFrame) -> int:
    """How many drafters the rows score (columns accepted_0, accepted_1, ...)."""
    n = 0
    while f"accepted_{n}" in routing:
        n += 1
    if n < 2:
        raise ValueError(f"routing rows must score 2 or more drafters (accepted_0, accepted_1, ...), found {n}")
    return n


def _one_run(routing: pd.DataFrame) -> pd.DataFrame:
    """The rows, once checked to come from a single routed run (one setting, one composition)."""
    missing = [c for c in ("benchmark", "prompt", "remaining", "levels") if c not in routing]
    if missing:
        raise ValueError(f"routing rows lack columns {missing}; rebuild them with taps.aggregate.routing_rows")
    runs = routing[[c for c in RUN if c in routing]].drop_duplicates()
    if len(runs) > 1:
        raise ValueError(f"routing rows of one run expected (one {', '.join(RUN)}), got {len(runs)}: "
                         f"{runs.to_dict('records')}")
    return routing
