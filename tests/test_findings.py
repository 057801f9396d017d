"""Findings: the paired bootstrap covers the truth, and every claim's verdict follows its CIs."""

import numpy as np
import pandas as pd
import pytest

from taps.findings import CLAIMS, findings, findings_markdown, tau_statistic
from taps.metrics import bootstrap_ci, paired_ratio_bootstrap

BENCHES = ["mt_bench", "gsm8k", "math500", "svamp"]
KINDS = {"route-confidence": "route-confidence", "route-entropy": "route-entropy", "merged-paper": "merged-tree",
         "merged-paper-no-trie": "merged-tree", "merged-equal": "merged-tree"}


def _t(chat: float, math: float) -> tuple:
    return chat, math, math, math  # tau on MT-Bench, GSM8K, MATH-500, SVAMP


# every claim (a)-(f), (h) holds: the best single drafter is mixed-320+320 (mean 3.575)
BASE = {"math": _t(2.0, 4.0), "chat": _t(3.5, 2.5), "mixed-160+160": _t(3.0, 3.5), "mixed-320+320": _t(3.2, 3.7),
        "averaged": _t(1.5, 1.5), "route-confidence": _t(3.4, 3.9), "route-entropy": _t(3.0, 3.6),
        "merged-paper": _t(4.0, 4.5), "merged-paper-no-trie": _t(3.9, 4.4), "merged-equal": _t(3.8, 4.2)}


def prompt_frame(taus=None, swing=None, backbone="hass", prompts=30, seed=0, drop=()):
    """P of one setting: per-prompt tau = tau + a prompt difficulty shared by all compositions + small noise.

    swing[c] adds +s / -s on alternate prompts to composition c: a tie with it stays a tie (point diff ~0)
    but becomes noisy, so its CI straddles 0.
    """
    taus, swing = {**BASE, **(taus or {})}, swing or {}
    rng = np.random.default_rng(seed)
    rows = []
    for j, bench in enumerate(BENCHES):
        difficulty = rng.normal(0, 0.3, prompts)
        for comp, tau in taus.items():
            per_prompt = tau[j] + difficulty + rng.normal(0, 0.05, prompts) + swing.get(comp, 0) * (-1) ** np.arange(prompts)
            if comp not in drop:
                rows += [{"target": "t", "backbone": backbone, "composition": comp, "kind": KINDS.get(comp, "single"),
                          "benchmark": bench, "temperature": 0.0, "prompt": f"{bench}-{i}",
                          "new_tokens": int(round(50 * x)), "passes": 50} for i, x in enumerate(per_prompt)]
    return pd.DataFrame(rows)


def depth_frame(rates, swing=0.0, prompts=30, seed=0):
    """D of the experts: rates[(composition, benchmark)] = acceptance rate at steps 1..5 (None: no cycle reached it).

    swing moves accepted counts at depth 4 by +/- on alternate prompts, math up where chat goes down.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for (comp, bench), by_depth in rates.items():
        for depth, rate in enumerate(by_depth, start=1):
            drafted = 0 if rate is None else 30
            accepted = rng.binomial(drafted, rate or 0, prompts)
            if depth == 4:
                accepted = accepted + np.round(swing * (1 if comp == "math" else -1) * (-1) ** np.arange(prompts))
            rows += [{"target": "t", "backbone": "hass", "composition": comp, "benchmark": bench, "temperature": 0.0,
                      "prompt": f"{bench}-{i}", "drafter": 0, "drafter_name": comp, "depth": depth,
                      "drafted": drafted, "accepted": int(a), "reached": drafted, "passed": int(a)}
                     for i, a in enumerate(accepted)]
    return pd.DataFrame(rows)


FLAT, FALLING, RISING = (0.8,) * 5, (0.7, 0.6, 0.5, 0.4, None), (0.3, 0.5, 0.6, 0.7, None)
DEPTH_CASES = {  # the matched expert's advantage: grows / shrinks / stays equal with depth
    "reproduced": ({("math", "gsm8k"): FLAT, ("chat", "gsm8k"): FALLING,
                    ("chat", "mt_bench"): FLAT, ("math", "mt_bench"): FALLING}, 0.0),
    "not reproduced": ({("math", "gsm8k"): FLAT, ("chat", "gsm8k"): RISING,
                        ("chat", "mt_bench"): FLAT, ("math", "mt_bench"): FALLING}, 0.0),
    "inconclusive": ({("math", "gsm8k"): (0.5,) * 4 + (None,), ("chat", "gsm8k"): (0.5,) * 4 + (None,)}, 10.0),
}


def _claim(claims, letter):
    return claims.set_index("claim").loc[letter]


# ---- the bootstrap ---------------------------------------------------------------------------------------------

def test_paired_bootstrap_of_one_ratio_is_bootstrap_ci():
    rng = np.random.default_rng(1)
    passes = rng.integers(5, 30, 25)
    tokens = passes + rng.binomial(4 * passes, 0.4)
    got = paired_ratio_bootstrap({"a": tokens}, {"a": passes}, {"a": 0}, lambda r: r["a"], seed=3)
    assert got == pytest.approx(bootstrap_ci(tokens, passes, seed=3), rel=1e-12)


def test_paired_difference_ci_covers_the_true_difference_about_95_percent():
    # tokens of prompt i = passes_i + Binomial(4 passes_i, q_i), so tau = 1 + 4 E[q]: tau_a - tau_b = 4 * 0.1
    rng = np.random.default_rng(0)
    covered = []
    for sim in range(300):
        passes = rng.integers(5, 30, 40)
        q = rng.uniform(0.2, 0.6, 40)  # prompt difficulty, shared: the two drafters are paired
        tokens = {"a": passes + rng.binomial(4 * passes, q + 0.1), "b": passes + rng.binomial(4 * passes, q)}
        _, low, high = paired_ratio_bootstrap(tokens, {"a": passes, "b": passes}, {"a": 0, "b": 0},
                                              lambda r: r["a"] - r["b"], n_boot=500, seed=sim)
        covered.append(low <= 0.4 <= high)
    assert 0.88 <= np.mean(covered) <= 0.99  # the percentile bootstrap undercovers a little at 40 prompts (0.92 here)


def test_ci_narrows_with_more_prompts_and_keeps_the_truth():
    widths = []
    for n in (20, 80, 320):
        rng = np.random.default_rng(n)
        passes = rng.integers(5, 30, n)
        tokens = passes + rng.binomial(4 * passes, 0.5)  # tau = 3
        _, low, high = paired_ratio_bootstrap({"a": tokens}, {"a": passes}, {"a": 0}, lambda r: r["a"], seed=0)
        assert low <= 3.0 <= high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]


def test_pairing_detects_a_small_consistent_gain_that_separate_cis_miss():
    rng = np.random.default_rng(2)
    passes = np.full(30, 20)
    base = rng.integers(40, 100, 30)
    a, b = base + 2, base  # +0.1 tau on every prompt, against a prompt spread of ~1 tau
    assert bootstrap_ci(a, passes)[1] < bootstrap_ci(b, passes)[2]  # separate CIs overlap
    diff, low, high = paired_ratio_bootstrap({"a": a, "b": b}, {"a": passes, "b": passes}, {"a": 0, "b": 0},
                                             lambda r: r["a"] - r["b"])
    assert diff == pytest.approx(0.1) and low > 0


def test_strata_are_resampled_separately_and_must_be_aligned():
    with pytest.raises(ValueError, match="equally long"):
        paired_ratio_bootstrap({"a": [1, 2], "b": [1, 2, 3]}, {"a": [1, 1], "b": [1, 1, 1]}, {"a": 0, "b": 0},
                               lambda r: r["a"])
    # two strata of constant ratios 2 and 4: every replicate's mean is exactly 3
    got = paired_ratio_bootstrap({"x": [2, 4, 6], "y": [4, 8]}, {"x": [1, 2, 3], "y": [1, 2]}, {"x": 0, "y": 1},
                                 lambda r: (r["x"] + r["y"]) / 2)
    assert got == pytest.approx((3.0, 3.0, 3.0))


def test_tau_statistic_is_a_ratio_of_sums_over_the_prompts_all_compositions_share():
    p = pd.DataFrame({"composition": ["a"] * 3 + ["b"] * 2, "benchmark": "gsm8k", "prompt": ["x", "y", "z", "x", "y"],
                      "new_tokens": [10, 20, 99, 6, 9], "passes": [5, 5, 1, 3, 3]})
    value, low, high = tau_statistic(p, lambda t: t[("a", "gsm8k")] - t[("b", "gsm8k")], n_boot=200)
    assert value == pytest.approx(30 / 10 - 15 / 6)  # prompt z, run by a only, is left out
    assert low <= value <= high


# ---- the claims ------------------------------------------------------------------------------------------------

CASES = {  # claim -> {verdict: (tau overrides, swing)}
    "a": {"not reproduced": ({"math": (2.0, 2.5, 4.0, 4.0), "chat": (3.5, 4.0, 2.5, 2.5)}, {}),
          "inconclusive": ({"chat": (3.5, 4.0, 2.5, 2.5)}, {"chat": 1.0})},
    "b": {"not reproduced": ({"mixed-160+160": _t(1.5, 3.5)}, {}),
          "inconclusive": ({"mixed-160+160": _t(2.5, 3.5)}, {"mixed-160+160": 1.0})},
    "c": {"not reproduced": ({"averaged": _t(4.8, 4.8)}, {}),
          "inconclusive": ({"averaged": BASE["chat"]}, {"averaged": 1.0})},
    "d": {"not reproduced": ({"route-confidence": _t(2.0, 2.0)}, {}),
          "inconclusive": ({"route-confidence": BASE["math"]}, {"route-confidence": 1.0})},
    "e": {"not reproduced": ({"merged-paper": _t(2.0, 2.0)}, {}),
          "inconclusive": ({"merged-paper": BASE["route-confidence"]}, {"merged-paper": 1.0})},
    "f": {"not reproduced": ({"route-entropy": _t(4.5, 4.5)}, {}),
          "inconclusive": ({"route-entropy": BASE["route-confidence"]}, {"route-entropy": 1.0})},
    "h": {"not reproduced": ({"merged-equal": _t(2.0, 2.0)}, {}),
          "inconclusive": ({"merged-equal": BASE["mixed-320+320"]}, {"merged-equal": 1.0})},
}


@pytest.fixture(scope="module")
def verdicts():
    """One findings run: the base setting, and per case a setting (its backbone names the case)."""
    frames = [prompt_frame(backbone="base")]
    frames += [prompt_frame(taus, swing, backbone=f"{letter}:{verdict}")
               for letter, cases in CASES.items() for verdict, (taus, swing) in cases.items()]
    depth = depth_frame(*DEPTH_CASES["reproduced"]).assign(backbone="base")
    return findings(pd.concat(frames), depth, seed=0)


def test_the_base_setting_reproduces_every_claim(verdicts):
    claims, comparisons = verdicts
    base = claims[claims.backbone == "base"].set_index("claim")
    assert list(base.index) == list(CLAIMS)
    assert (base.verdict == "reproduced").all()
    counts = comparisons[comparisons.backbone == "base"].groupby("claim").size()
    assert counts.to_dict() == {"a": 4, "b": 4, "c": 9, "d": 2, "e": 7, "f": 1, "g": 2, "h": 1}
    assert (base.comparisons == counts).all()


@pytest.mark.parametrize("letter,verdict", [(c, v) for c, cases in CASES.items() for v in cases])
def test_claim_verdict_follows_its_comparisons(verdicts, letter, verdict):
    claims, comparisons = verdicts
    setting = claims[claims.backbone == f"{letter}:{verdict}"]
    assert _claim(setting, letter).verdict == verdict
    rows = comparisons[(comparisons.backbone == f"{letter}:{verdict}") & (comparisons.claim == letter)]
    assert (rows.verdict == "not reproduced").any() == (verdict == "not reproduced")
    assert ((rows.low <= 0) & (rows.high >= 0)).any() or verdict == "not reproduced"


def test_best_single_is_chosen_on_the_full_data(verdicts):
    _, comparisons = verdicts
    h = comparisons[(comparisons.backbone == "base") & (comparisons.claim == "h")].iloc[0]
    assert (h.a, h.b) == ("merged-equal", "mixed-320+320")
    assert h["diff"] == pytest.approx(np.mean(BASE["merged-equal"]) - np.mean(BASE["mixed-320+320"]), abs=0.03)


@pytest.mark.parametrize("verdict", list(DEPTH_CASES))
def test_claim_g_compares_the_advantage_at_the_deepest_well_sampled_depth(verdict):
    claims, comparisons = findings(prompt_frame(), depth_frame(*DEPTH_CASES[verdict]), n_boot=1000)
    assert _claim(claims, "g").verdict == verdict
    g = comparisons[comparisons.claim == "g"]
    assert g.comparison.str.contains("step 4 minus step 1").all()  # depth 5: chat drafted nothing
    if verdict == "reproduced":  # GSM8K: (0.8 - 0.4) - (0.8 - 0.7) = 0.3
        assert g[g.comparison.str.contains("GSM8K")]["diff"].iloc[0] == pytest.approx(0.3, abs=0.05)


def test_missing_compositions_give_not_evaluated_with_a_reason():
    claims, _ = findings(prompt_frame(drop=("averaged", "route-entropy", "mixed-160+160", "mixed-320+320")),
                         depth_frame({("math", "gsm8k"): (0.8, None, None, None, None),
                                      ("chat", "gsm8k"): (0.5, None, None, None, None)}), n_boot=200)
    for letter, absent in [("b", "mixed-160+160"), ("c", "averaged"), ("f", "route-entropy"), ("g", "cycles reaching")]:
        row = _claim(claims, letter)
        assert row.verdict == "not evaluated" and row.comparisons == 0 and absent in row.reason
    assert _claim(claims, "a").verdict == "reproduced"
    claims, _ = findings(prompt_frame(drop=("chat",)), None, n_boot=200)
    assert (claims.set_index("claim").loc[["a", "b", "d", "g"]].verdict == "not evaluated").all()


def test_findings_markdown_states_each_claim_and_its_verdicts(verdicts):
    claims, comparisons = verdicts
    text = findings_markdown(claims, comparisons)
    assert "no multiplicity correction" in text
    for letter, (statement, _) in CLAIMS.items():
        assert f"## ({letter}) {statement}" in text
    assert "- t / base / T=0: **reproduced** — 4 of 4 comparisons reproduced" in text
    assert "- t / a:not reproduced / T=0: **not reproduced**" in text
    assert "- t / f:inconclusive / T=0: **inconclusive** — diff" in text
    assert "- t / a:inconclusive / T=0: **not evaluated** — no per-depth rows" in text
    assert "| t / base / T=0 | math vs chat on GSM8K |" in text
