"""Acceptance length, defined once for the whole project.

tau = new tokens / target verification passes. Each pass contributes its accepted draft
tokens plus the one token the target adds itself; the token produced by the prefill is not
counted (it needs no drafter). Cycle rows carry `emitted`, the tokens a pass added to the
output after the max_new_tokens / EOS cut, so tau is exactly what the user received.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


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
