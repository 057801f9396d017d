"""Acceptance length, defined once for the whole project.

tau = new tokens / target verification passes. Each pass contributes its accepted draft
tokens plus the one token the target adds itself; the token produced by the prefill is not
counted (it needs no drafter). Cycle rows carry `emitted`, the tokens a pass added to the
output after the max_new_tokens / EOS cut, so tau is exactly what the user received.
Comparisons between compositions evaluated on the same prompts use the paired bootstrap here.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)


def acceptance_length(cycles: Iterable[dict]) -> float:
    """tau over cycle rows (each with 'emitted'); nan when there was no verification pass."""
    emitted = [c["emitted"] for c in cycles]
    return float(sum(emitted) / len(emitted)) if emitted else float("nan")


def bootstrap_ci(tokens: Sequence[int], passes: Sequence[int], level: float = 0.95,
                 n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """tau (ratio of sums) with a percentile bootstrap CI over prompts: (tau, low, high).

    tokens[i], passes[i]: new tokens and verification passes of prompt i.
    """
    tokens_a, passes_a = np.asarray(tokens, dtype=float), np.asarray(passes, dtype=float)
    if tokens_a.shape != passes_a.shape or tokens_a.size == 0:
        raise ValueError("bootstrap_ci needs equally long, non-empty per-prompt token and pass counts")
    tau = tokens_a.sum() / passes_a.sum()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, tokens_a.size, size=(n_boot, tokens_a.size))
    boot = tokens_a[idx].sum(1) / passes_a[idx].sum(1)
    alpha = (1 - level) / 2
    return float(tau), float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))


def paired_ratio_bootstrap(numerators: Mapping[K, Sequence[float]], denominators: Mapping[K, Sequence[float]],
                           strata: Mapping[K, Hashable], statistic: Callable[[dict[K, np.ndarray]], np.ndarray],
                           level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """A statistic of ratios of sums, with a paired, stratified percentile bootstrap CI: (value, low, high).

    Key k names per-unit counts numerators[k][i], denominators[k][i] (e.g. new tokens and passes of
    prompt i); its ratio is sum(numerators[k]) / sum(denominators[k]). Keys of one stratum are paired:
    their arrays are aligned unit by unit and every replicate resamples the same unit ids for all of
    them, independently per stratum. `statistic` maps {key: ratios} to values and must work element-
    wise (numpy), since it is called once with ratios of shape [1 + n_boot]: the data, then each replicate.
    """
    rng = np.random.default_rng(seed)
    ratios: dict[K, np.ndarray] = {}
    for stratum in dict.fromkeys(strata[k] for k in numerators):
        keys = [k for k in numerators if strata[k] == stratum]
        lengths = {len(numerators[k]) for k in keys} | {len(denominators[k]) for k in keys}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(f"stratum {stratum!r}: paired counts must be non-empty and equally long, got {lengths}")
        num = np.array([numerators[k] for k in keys], dtype=float)  # [keys, units]
        den = np.array([denominators[k] for k in keys], dtype=float)
        n = num.shape[1]
        idx = rng.integers(0, n, size=(n_boot, n))  # [n_boot, units]: the draws bootstrap_ci makes
        times = np.bincount((idx + n * np.arange(n_boot)[:, None]).ravel(), minlength=n_boot * n)
        weights = np.vstack([np.ones(n), times.reshape(n_boot, n)])  # [1 + n_boot, units]: times each unit is drawn
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios.update(zip(keys, (num @ weights.T) / (den @ weights.T)))  # [keys, 1 + n_boot]
    values = np.asarray(statistic(ratios), dtype=float)
    alpha = (1 - level) / 2
    return float(values[0]), float(np.nanquantile(values[1:], alpha)), float(np.nanquantile(values[1:], 1 - alpha))
