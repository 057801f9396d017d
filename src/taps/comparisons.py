"""Paired comparisons of tau: a statistic of several compositions' taus, with its 95% CI and p.

A comparison is the difference stat(A) - stat(B) of a statistic of tau, where tau(composition, benchmark) =
sum new_tokens / sum passes over the benchmark's prompts. Within one (target, backbone, temperature) every
composition ran on the same prompts, so the test is paired and stratified: prompt ids are resampled within each
benchmark, the same ids for every composition (taps.metrics.paired_ratio_test). Its 95% CI and two-sided p come
from a studentized bootstrap (jackknife SE per replicate, symmetric, critical value at least the paired t-test's),
chosen because on simulated prompts shaped like ours (10-20 prompts, 1-4 benchmarks) it calls a difference that
is not there ~4% of the time and covers the true one ~96%; the percentile bootstrap did so 8-9% and 91%
(tests/test_calibration.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd

from taps.metrics import paired_ratio_test

Taus = dict  # {(composition, benchmark): tau values, arrays of one shape}


class Spec(NamedTuple):
    """One comparison "a beats b" of a claim."""
    text: str
    a: str
    b: str
    run: Callable[[int], tuple[float, float, float, float]]  # seed -> (diff, low, high, p)
    prompts: tuple[int, str]  # (fewest paired prompts on a benchmark it uses, that benchmark)
    decides: bool = True  # False: reported beside the claim, not part of its verdict (nor of its Holm family)
    margin: float | None = None  # equivalence margin in the statistic's units (None: Roles.margin, in tau)


def prompt_counts(p: pd.DataFrame) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """Per benchmark: (compositions, new_tokens, passes), counts as [prompt, composition] arrays, NaN where not run."""
    counts = {}
    for bench, rows in p.groupby("benchmark", sort=True):
        table = rows.pivot_table(index="prompt", columns="composition", values=["new_tokens", "passes"], aggfunc="sum")
        comps = list(table["new_tokens"].columns)
        counts[bench] = comps, table["new_tokens"][comps].to_numpy(float), table["passes"][comps].to_numpy(float)
    return counts


def paired_prompts(counts: dict, compositions: list[str]) -> dict[str, tuple[dict[str, int], np.ndarray]]:
    """Per benchmark: ({composition: column}, mask of the prompts every one of `compositions` ran)."""
    out = {}
    for bench, (comps, tokens, passes) in counts.items():
        cols = {c: comps.index(c) for c in compositions if c in comps}
        out[bench] = cols, ~np.isnan(tokens[:, list(cols.values())] + passes[:, list(cols.values())]).any(axis=1)
    return out


def tau_ci(counts: dict, compositions: list[str], statistic: Callable[[Taus], np.ndarray], n_boot: int,
           seed: int) -> tuple[float, float, float, float]:
    """statistic of the taus of `compositions` in `counts` (prompt_counts), on the prompts all of them ran."""
    num, den, strata = {}, {}, {}
    for bench, (cols, keep) in paired_prompts(counts, compositions).items():
        _, tokens, passes = counts[bench]
        for c, j in cols.items():
            num[(c, bench)], den[(c, bench)], strata[(c, bench)] = tokens[keep, j], passes[keep, j], bench
    return paired_ratio_test(num, den, strata, statistic, n_boot=n_boot, seed=seed)


def tau_statistic(p: pd.DataFrame, statistic: Callable[[Taus], np.ndarray], n_boot: int = 2000,
                  seed: int = 0) -> tuple[float, float, float, float]:
    """statistic({(composition, benchmark): tau}) on the rows of P, with its paired 95% CI and p: (value, low, high, p).

    `statistic` must be element-wise numpy (taps.metrics.paired_ratio_test calls it on arrays of replicates).
    Prompts are resampled within each benchmark, the same ids for every composition; on each benchmark only
    the prompts that every composition in `p` has are used. p tests "statistic = 0".
    """
    return tau_ci(prompt_counts(p), list(p.composition.unique()), statistic, n_boot, seed)
