"""The paper's claims, each decided from confidence intervals rather than from point estimates.

A claim is a set of comparisons "A beats B"; a comparison is the difference stat(A) - stat(B) of
a statistic of tau, where tau(composition, benchmark) = sum new_tokens / sum passes over the
benchmark's prompts. Its 95% CI is a paired percentile bootstrap (taps.metrics.paired_ratio_bootstrap):
within one (target, backbone, temperature) every composition ran on the same prompts, so prompt ids
are resampled with replacement within each benchmark, the same ids for every composition.

A comparison is "reproduced" when its CI lies above 0, "not reproduced" when it lies below 0, and
"inconclusive" otherwise. A claim is reproduced when all its comparisons are, not reproduced when
any one is not, inconclusive otherwise, and "not evaluated" (with a reason) when the compositions or
benchmarks it needs are absent. There is no multiplicity correction: each comparison is read at 95%
on its own, so a claim made of many comparisons is reproduced less easily than a single one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from taps.benchmarks import DOMAINS, display_name
from taps.metrics import paired_ratio_bootstrap

SETTING = ["target", "backbone", "temperature"]
COMPARISON_COLUMNS = SETTING + ["claim", "comparison", "a", "b", "diff", "low", "high", "verdict"]
CLAIM_COLUMNS = SETTING + ["claim", "statement", "verdict", "comparisons", "reason", "summary"]

Taus = dict  # {(composition, benchmark): tau values, shape [1 + n_boot]}
Spec = tuple[str, str, str, Callable[[int], tuple[float, float, float]]]  # text, a, b, seed -> (diff, low, high)


@dataclass(frozen=True)
class Roles:
    """Which composition plays which part in the claims (names as in config/config.yaml)."""
    experts: dict[str, str] = field(default_factory=lambda: {"math": "math", "chat": "chat"})  # domain -> expert
    domains: dict[str, str] = field(default_factory=lambda: dict(DOMAINS))  # benchmark -> its domain
    mixtures: list[str] = field(default_factory=lambda: ["mixed-160+160", "mixed-320+320"])  # mixed-data drafters
    averaged: str = "averaged"  # weight-averaged experts
    route_confidence: str = "route-confidence"
    route_entropy: str = "route-entropy"
    merged: str = "merged-paper"  # merged trees at the paper's verification budget
    merged_equal: str = "merged-equal"  # merged trees at a single drafter's budget
    min_cycles: int = 20  # claim (g): fewest cycles each expert must have reached the deepest step compared in


def prompt_counts(p: pd.DataFrame) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """Per benchmark: (compositions, new_tokens, passes), counts as [prompt, composition] arrays, NaN where not run."""
    counts = {}
    for bench, rows in p.groupby("benchmark", sort=True):
        table = rows.pivot_table(index="prompt", columns="composition", values=["new_tokens", "passes"], aggfunc="sum")
        comps = list(table["new_tokens"].columns)
        counts[bench] = comps, table["new_tokens"][comps].to_numpy(float), table["passes"][comps].to_numpy(float)
    return counts


def _tau_ci(counts: dict, compositions: list[str], statistic: Callable[[Taus], np.ndarray], n_boot: int,
            seed: int) -> tuple[float, float, float]:
    num, den, strata = {}, {}, {}
    for bench, (comps, tokens, passes) in counts.items():
        cols = {c: comps.index(c) for c in compositions if c in comps}
        keep = ~np.isnan(tokens[:, list(cols.values())] + passes[:, list(cols.values())]).any(axis=1)  # paired
        for c, j in cols.items():
            num[(c, bench)], den[(c, bench)], strata[(c, bench)] = tokens[keep, j], passes[keep, j], bench
    return paired_ratio_bootstrap(num, den, strata, statistic, n_boot=n_boot, seed=seed)


def tau_statistic(p: pd.DataFrame, statistic: Callable[[Taus], np.ndarray], n_boot: int = 2000,
                  seed: int = 0) -> tuple[float, float, float]:
    """statistic({(composition, benchmark): tau}) on the rows of P, with its paired 95% CI: (value, low, high).

    `statistic` is called once with arrays of shape [1 + n_boot] (the data, then each replicate) and
    must be element-wise numpy. Prompts are resampled within each benchmark, the same ids for every
    composition; on each benchmark only the prompts that every composition in `p` has are used.
    """
    return _tau_ci(prompt_counts(p), list(p.composition.unique()), statistic, n_boot, seed)


@dataclass
class _Setting:
    """One (target, backbone, temperature): its counts, benchmarks and evaluated compositions."""
    roles: Roles
    counts: dict[str, tuple[list[str], np.ndarray, np.ndarray]]  # prompt_counts of the setting
    benches: list[str]  # in the order of roles.domains, then others
    pairs: set[tuple[str, str]]  # (composition, benchmark) evaluated
    present: list[str]  # compositions evaluated on every benchmark of the setting
    kinds: dict[str, str]
    d: pd.DataFrame | None
    n_boot: int

    def mean(self, t: Taus, c: str) -> np.ndarray:
        return np.mean([t[(c, b)] for b in self.benches], axis=0)

    def worst(self, t: Taus, c: str) -> np.ndarray:
        return np.min([t[(c, b)] for b in self.benches], axis=0)

    def point_mean(self, c: str) -> float:
        return float(np.mean([np.nansum(tok[:, comps.index(c)]) / np.nansum(pas[:, comps.index(c)])
                              for comps, tok, pas in self.counts.values()]))

    def beats(self, text: str, a: str, b: str, stat: Callable[[Taus, str], np.ndarray]) -> Spec:
        return text, a, b, lambda seed: _tau_ci(self.counts, [a, b], lambda t: stat(t, a) - stat(t, b),
                                                self.n_boot, seed)

    def missing(self, names) -> list[str]:
        return [c for c in names if c not in self.present]

    def matched(self):
        """(benchmark, matched expert, other expert) for every benchmark of known domain."""
        for bench in self.benches:
            domain = self.roles.domains.get(bench)
            if domain in self.roles.experts:
                for other_domain, other in self.roles.experts.items():
                    if other_domain != domain:
                        yield bench, self.roles.experts[domain], other


def _absent(names) -> str:
    return "absent (or not on every benchmark): " + ", ".join(names)


def _claim_a(s: _Setting) -> list[Spec] | str:
    specs = [s.beats(f"{m} vs {o} on {display_name(b)}", m, o, lambda t, c, b=b: t[(c, b)])
             for b, m, o in s.matched() if (m, b) in s.pairs and (o, b) in s.pairs]
    return specs or "needs both experts on a benchmark of known domain"


def _claim_b(s: _Setting) -> list[Spec] | str:
    experts, mixtures = list(s.roles.experts.values()), [m for m in s.roles.mixtures if m in s.present]
    if s.missing(experts) or not mixtures:
        return _absent(s.missing(experts) + ([] if mixtures else s.roles.mixtures))
    return [s.beats(f"{m} vs {e}: worst benchmark", m, e, s.worst) for m in mixtures for e in experts]


def _claim_c(s: _Setting) -> list[Spec] | str:
    others = [c for c in s.present if c != s.roles.averaged]
    if s.roles.averaged not in s.present or not others:
        return _absent(s.missing([s.roles.averaged]) or ["any other composition"])
    return [s.beats(f"{c} vs {s.roles.averaged}: mean tau", c, s.roles.averaged, s.mean) for c in others]


def _claim_d(s: _Setting) -> list[Spec] | str:
    rc, experts = s.roles.route_confidence, list(s.roles.experts.values())
    if s.missing([rc] + experts):
        return _absent(s.missing([rc] + experts))
    return [s.beats(f"{rc} vs {e}: mean tau", rc, e, s.mean) for e in experts]


def _claim_e(s: _Setting) -> list[Spec] | str:
    merged, others = s.roles.merged, [c for c in s.present if s.kinds[c] != "merged-tree"]
    if merged not in s.present or not others:
        return _absent(s.missing([merged]) or ["any composition that is not a merged tree"])
    return [s.beats(f"{merged} vs {c}: mean tau", merged, c, s.mean) for c in others]


def _claim_f(s: _Setting) -> list[Spec] | str:
    rc, re = s.roles.route_confidence, s.roles.route_entropy
    return _absent(s.missing([rc, re])) if s.missing([rc, re]) else [s.beats(f"{rc} vs {re}: mean tau", rc, re, s.mean)]


def _depth_spec(s: _Setting, bench: str, m: str, o: str) -> Spec | None:
    """Matched expert m vs other o on bench: advantage in conditional acceptance rate (cycles passing step k
    / cycles reaching it) at the deepest step both reached >= roles.min_cycles times (chosen on the full
    data), minus the advantage at step 1."""
    rows = s.d[(s.d.benchmark == bench) & s.d.composition.isin([m, o])].dropna(subset=["reached", "passed"])
    rows = rows.drop_duplicates(["composition", "prompt", "depth"])  # cycle counts, one row per prompt and step
    if rows.composition.nunique() < 2:
        return None
    common = sorted(set.intersection(*[set(g.prompt) for _, g in rows.groupby("composition")]))  # paired prompts
    table = rows.pivot_table(index="prompt", columns=["composition", "depth"], values=["passed", "reached"],
                             aggfunc="sum").loc[common].fillna(0)  # a step a prompt never reached: 0 cycles
    reached = table["reached"].sum()  # [(composition, depth)]
    deep = [k for k in sorted(rows.depth.unique())
            if k > 1 and all(reached.get((c, k), 0) >= max(s.roles.min_cycles, 1) for c in (m, o))]
    if not common or not deep or not all(reached.get((c, 1), 0) > 0 for c in (m, o)):
        return None
    k = deep[-1]
    keys = [(c, depth) for c in (m, o) for depth in (1, k)]
    num = {key: table[("passed", *key)].to_numpy() for key in keys}
    den = {key: table[("reached", *key)].to_numpy() for key in keys}

    def advantage_growth(r):
        return (r[(m, k)] - r[(o, k)]) - (r[(m, 1)] - r[(o, 1)])

    return (f"{m} vs {o} on {display_name(bench)}: advantage at step {k} minus step 1", m, o,
            lambda seed: paired_ratio_bootstrap(num, den, dict.fromkeys(num, bench), advantage_growth,
                                                n_boot=s.n_boot, seed=seed))


def _claim_g(s: _Setting) -> list[Spec] | str:
    if s.d is None or s.d.empty:
        return "no per-depth rows (D) for the experts"
    specs = [spec for bench, m, o in s.matched() if (spec := _depth_spec(s, bench, m, o)) is not None]
    return specs or f"needs both experts' step counts, >= {s.roles.min_cycles} cycles reaching a step beyond 1"


def _claim_h(s: _Setting) -> list[Spec] | str:
    singles = [c for c in s.present if s.kinds[c] == "single"]
    if s.roles.merged_equal not in s.present or not singles:
        return _absent(s.missing([s.roles.merged_equal]) or ["any single drafter"])
    best = max(singles, key=s.point_mean)  # chosen once on the full data, held fixed in every replicate
    return [s.beats(f"{s.roles.merged_equal} vs best single ({best}): mean tau", s.roles.merged_equal, best, s.mean)]


CLAIMS: dict[str, tuple[str, Callable[[_Setting], list[Spec] | str]]] = {
    "a": ("matched-domain specialisation: on every benchmark the expert of its domain beats the other expert",
          _claim_a),
    "b": ("mixtures are more robust across benchmarks: each mixture's worst-benchmark tau beats each expert's",
          _claim_b),
    "c": ("averaging is the weakest: every other composition beats weight averaging in mean tau", _claim_c),
    "d": ("confidence routing beats single-domain drafters in mean tau", _claim_d),
    "e": ("merged-tree verification is best: it beats every composition that is not a merged tree in mean tau",
          _claim_e),
    "f": ("confidence beats entropy as a routing signal in mean tau", _claim_f),
    "g": ("deeper speculative steps favour the matched expert: its advantage in conditional acceptance rate "
          "(cycles passing step k / cycles reaching it) grows from step 1 to the deepest well-sampled step",
          _claim_g),
    "h": ("ours: merged trees at a single drafter's budget beat the best single drafter in mean tau "
          "(best chosen on the full data, held fixed in the bootstrap)", _claim_h),
}


def _verdict(low: float, high: float) -> str:
    return "reproduced" if low > 0 else "not reproduced" if high < 0 else "inconclusive"


def _claim_verdict(verdicts: list[str]) -> str:
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    return "not reproduced" if "not reproduced" in verdicts else "inconclusive"


def _summary(rows: list[dict]) -> str:
    worst = min(rows, key=lambda r: r["diff"])
    numbers = f"{worst['diff']:+.2f} [{worst['low']:+.2f}, {worst['high']:+.2f}] ({worst['comparison']})"
    if len(rows) == 1:
        return f"diff {numbers}"
    won = sum(r["verdict"] == "reproduced" for r in rows)
    return f"{won} of {len(rows)} comparisons reproduced; smallest diff {numbers}"


def findings(P: pd.DataFrame, D: pd.DataFrame | None = None, roles: Roles = Roles(), seed: int = 0,
             n_boot: int = 2000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Verdicts on claims (a)-(h) per (target, backbone, temperature): (claims_df, comparisons_df)."""
    claims, comparisons = [], []
    for key, p in P.groupby(SETTING, sort=True):
        setting = dict(zip(SETTING, key))
        order = {b: i for i, b in enumerate(roles.domains)}
        benches = sorted(p.benchmark.unique(), key=lambda b: (order.get(b, len(order)), b))
        per_comp = p.groupby("composition").benchmark.nunique()
        d = None
        if D is not None:
            d = D[(D[SETTING] == pd.Series(setting)).all(axis=1) & D.composition.isin(roles.experts.values())]
        s = _Setting(roles, prompt_counts(p), benches, set(zip(p.composition, p.benchmark)),
                     sorted(per_comp.index[per_comp == len(benches)]),
                     dict(zip(p.composition, p.kind)), d, n_boot)
        for letter, (statement, build) in CLAIMS.items():
            specs = build(s)
            head = {**setting, "claim": letter, "statement": statement}
            if isinstance(specs, str):
                claims.append({**head, "verdict": "not evaluated", "comparisons": 0, "reason": specs, "summary": ""})
                continue
            rows = []
            for text, a, b, run in specs:
                diff, low, high = run(seed)
                rows.append({**setting, "claim": letter, "comparison": text, "a": a, "b": b, "diff": diff,
                             "low": low, "high": high, "verdict": _verdict(low, high)})
            comparisons += rows
            claims.append({**head, "verdict": _claim_verdict([r["verdict"] for r in rows]),
                           "comparisons": len(rows), "reason": "", "summary": _summary(rows)})
    return pd.DataFrame(claims, columns=CLAIM_COLUMNS), pd.DataFrame(comparisons, columns=COMPARISON_COLUMNS)


def _where(row) -> str:
    return f"{row.target} / {row.backbone} / T={row.temperature:g}"


def findings_markdown(claims: pd.DataFrame, comparisons: pd.DataFrame) -> str:
    """results/findings.md: how verdicts are decided, then per claim its verdicts and comparisons."""
    lines = ["# Findings: the paper's claims, decided from confidence intervals", "",
             "Each claim is one or more comparisons \"A beats B\", each the paired difference of a statistic of "
             "tau (sum of new tokens / sum of target passes over a benchmark's prompts) with its 95% percentile "
             "bootstrap CI: 2000 replicates, prompts resampled within each benchmark, the same prompts for every "
             "composition.", "",
             "- comparison: **reproduced** if the CI lies above 0, **not reproduced** if below 0, "
             "**inconclusive** if it contains 0;",
             "- claim: reproduced if all its comparisons are, not reproduced if any is not, inconclusive otherwise; "
             "**not evaluated** when a composition or benchmark it needs is absent;",
             "- no multiplicity correction: each comparison is read at 95% on its own.", ""]
    for letter, (statement, _) in CLAIMS.items():
        lines += [f"## ({letter}) {statement}", ""]
        for row in claims[claims.claim == letter].itertuples():
            detail = row.reason if row.verdict == "not evaluated" else row.summary
            lines.append(f"- {_where(row)}: **{row.verdict}** — {detail}")
        rows = comparisons[comparisons.claim == letter]
        if len(rows):
            lines += ["", "| setting | comparison | diff | 95% CI | verdict |", "|---|---|---|---|---|"]
            lines += [f"| {_where(r)} | {r.comparison} | {r.diff:+.2f} | [{r.low:+.2f}, {r.high:+.2f}] | {r.verdict} |"
                      for r in rows.itertuples()]
        lines.append("")
    return "\n".join(lines)
