"""Calibration of taps.metrics.paired_ratio_test on simulated prompts shaped like ours.

Each simulated benchmark has n prompts of 64 new tokens (MT-Bench: 2 turns, 128), a fifth of them cut
short by EOS; per-prompt tau is lognormal (mean 1.5-3.5, sd of log 0.3 between prompts), the two
compositions share the prompt's difficulty (log-tau correlation ~0.9), passes = tokens / tau. The
statistic is the mean over 1-4 benchmarks of the difference of ratio-of-sums taus, as in taps.comparisons.
With no difference (A and B exchangeable) a verdict must be called at most 5% of the time; with one,
the 95% CI must cover the true difference (population ratio of sums: tau = 1 / E[1/tau]) >= 94% of the time.
"""

import numpy as np
import pytest

from taps.metrics import paired_ratio_bootstrap, paired_ratio_test

SD_PROMPT, SD_PAIR = 0.3, 0.1  # log tau: between prompts, and between the compositions on one prompt
NULL_SIMS, EFFECT_SIMS = 3000, 1000  # Monte Carlo sd: 0.004 on a 5% false-verdict rate, 0.007 on 95% coverage


def simulate(rng, n, n_benchmarks, effect):
    """(numerators, denominators, strata, true difference) of A (tau x exp(effect)) against B."""
    num, den, strata, truth = {}, {}, {}, []
    for bench in range(n_benchmarks):
        full = 128 if bench == 0 else 64  # benchmark 0 plays MT-Bench: two turns
        tokens = np.where(rng.random(n) < 0.2, rng.integers(full // 4, full, n), full).astype(float)
        tau, difficulty = rng.uniform(1.5, 3.5), rng.normal(0, SD_PROMPT, n)
        for comp, shift in (("a", effect), ("b", 0.0)):
            num[(comp, bench)] = tokens
            den[(comp, bench)] = tokens / (tau * np.exp(shift + difficulty + rng.normal(0, SD_PAIR, n)))
            strata[(comp, bench)] = bench
        truth.append(tau * (np.exp(effect) - 1) * np.exp(-(SD_PROMPT**2 + SD_PAIR**2) / 2))
    return num, den, strata, float(np.mean(truth))


def mean_difference(n_benchmarks):
    return lambda r: np.mean([r[("a", b)] - r[("b", b)] for b in range(n_benchmarks)], axis=0)


def rates(test, n, seed, null_sims=NULL_SIMS, effect_sims=EFFECT_SIMS):
    """(false-verdict rate with no difference, coverage of a difference drawn in +/-20% of tau)."""
    rng = np.random.default_rng(seed)
    false, covered = [], []
    for sim in range(null_sims + effect_sims):
        k, null = 1 + sim % 4, sim < null_sims
        num, den, strata, truth = simulate(rng, n, k, 0.0 if null else rng.uniform(-0.2, 0.2))
        low, high = test(num, den, strata, mean_difference(k), n_boot=999, seed=sim)[1:3]
        if null:
            false.append(low > 0 or high < 0)  # a verdict either way
        else:
            covered.append(low <= truth <= high)
    return float(np.mean(false)), float(np.mean(covered))


@pytest.mark.parametrize("n", [10, 20])
def test_studentized_test_calls_at_most_5_percent_false_verdicts_and_covers_94_percent(n, capsys):
    false, coverage = rates(paired_ratio_test, n, seed=n)
    with capsys.disabled():
        print(f"\npaired_ratio_test, {n} prompts per benchmark ({NULL_SIMS} / {EFFECT_SIMS} simulations): "
              f"false verdicts {false:.3f} (no difference), coverage {coverage:.3f} (a difference)")
    assert false <= 0.05 and coverage >= 0.94


def test_percentile_bootstrap_is_the_miscalibrated_baseline(capsys):
    false, coverage = rates(paired_ratio_bootstrap, 10, seed=10, null_sims=1000)
    with capsys.disabled():
        print(f"\npaired_ratio_bootstrap (percentile), 10 prompts: false verdicts {false:.3f}, coverage {coverage:.3f}")
    assert false > 0.06 and coverage < 0.94  # why findings no longer decide from it
