"""The paper's claims, each decided by calibrated paired tests rather than from point estimates.

A claim is a set of comparisons "A beats B"; a comparison is the difference stat(A) - stat(B) of a
statistic of tau, where tau(composition, benchmark) = sum new_tokens / sum passes over the
benchmark's prompts. Within one (target, backbone, temperature) every composition ran on the same
prompts, so the test is paired and stratified: prompt ids are resampled within each benchmark, the
same ids for every composition (taps.metrics.paired_ratio_test). Its 95% CI and two-sided p come
from a studentized bootstrap (jackknife SE per replicate, symmetric, critical value at least the
paired t-test's), chosen because on simulated prompts shaped like ours (10-20 prompts, 1-4
benchmarks) it calls a difference that is not there ~4% of the time and covers the true one ~96%;
the percentile bootstrap did so 8-9% and 91% (tests/test_calibration.py).

A comparison is "equivalent" when its whole CI lies within +/- Roles.margin (a difference too small to
matter, significant or not); otherwise "reproduced" / "not reproduced" when its Holm-adjusted p
(Holm over the deciding comparisons of the claim, family-wise 5%) is below 0.05 with diff above /
below 0, and "inconclusive" otherwise. A claim is not reproduced when any deciding comparison is not,
reproduced when all are, equivalent when none is inconclusive and at least one is equivalent,
inconclusive otherwise. It is "not evaluated" (with a reason) when the compositions it needs are
absent, or when a benchmark it uses has fewer than Roles.min_prompts paired prompts (reason "n = ...").
Each claim's compositions are named in Roles (config `findings`), never "every other composition".
Some comparisons are reported without deciding (`decides` False, read at their own p): claim (d)'s
plain-mean rows and its routing-vs-oracle row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from taps.benchmarks import DOMAINS, display_name
from taps.metrics import paired_ratio_test
from taps.same_contexts import PairedCounts, signal_counts, step_counts
from taps.verdicts import ALPHA, decide

SETTING = ["target", "backbone", "temperature"]
COMPARISON_COLUMNS = SETTING + ["claim", "comparison", "a", "b", "decides", "prompts", "diff", "low", "high", "p",
                                "p_holm", "verdict"]
CLAIM_COLUMNS = SETTING + ["claim", "statement", "verdict", "comparisons", "reason", "summary"]

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


@dataclass(frozen=True)
class Roles:
    """Which composition plays which part in the claims, and how verdicts are read (config `findings`)."""
    experts: dict[str, str] = field(default_factory=lambda: {"math": "math", "chat": "chat"})  # domain -> expert
    domains: dict[str, str] = field(default_factory=lambda: dict(DOMAINS))  # benchmark -> its domain
    mixtures: list[str] = field(default_factory=lambda: ["mixed-160+160", "mixed-320+320"])  # mixed-data drafters
    averaged: str = "averaged"  # weight-averaged experts
    route_confidence: str = "route-confidence"
    route_entropy: str = "route-entropy"
    merged: str = "merged-paper"  # merged trees at the paper's verification budget
    merged_equal: str = "merged-equal"  # merged trees at a single drafter's budget
    # claim (c): the compositions that should each beat `averaged`
    averaged_rivals: list[str] = field(default_factory=lambda: [
        "math", "chat", "mixed-160+160", "mixed-320+320", "route-confidence", "route-entropy", "merged-paper",
        "merged-equal"])
    # claim (e): the compositions `merged` should each beat (not merged trees)
    merged_rivals: list[str] = field(default_factory=lambda: [
        "math", "chat", "mixed-160+160", "mixed-320+320", "averaged", "route-confidence", "route-entropy"])
    # claim (e) at equal verification work: compositions given the merged tree's node budget (their own `tree`)
    merged_work_rivals: list[str] = field(default_factory=lambda: ["math@119", "chat@119", "mixed-320+320@119"])
    # claim (h): the single drafters among which the best is chosen
    singles: list[str] = field(default_factory=lambda: ["math", "chat", "mixed-160+160", "mixed-320+320", "averaged"])
    min_cycles: int = 20  # claim (g): fewest cycles of a benchmark where both experts reached step `depth_step`
    depth_step: int = 3  # claim (g): the step k compared with step 1 (fixed, not chosen from the data)
    min_prompts: int = 10  # fewest paired prompts on every benchmark a claim uses; fewer: "not evaluated"
    margin: float = 0.05  # tau: a comparison whose whole 95% CI lies within +/- margin is "equivalent"
    # claim (i): interpolation lines between two drafters, pair -> {alpha: composition} (alpha 0: the first, 1: the
    # second); pairs "shared" (the experts from one initialisation), "independent" (from two) and "control" (an
    # expert and a copy trained on the same data from another initialisation). The workflow fills it (config
    # interpolations).
    interpolations: dict[str, dict[float, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:  # JSON keys are strings: alphas back to floats
        object.__setattr__(self, "interpolations", {pair: {float(a): c for a, c in line.items()}
                                                    for pair, line in self.interpolations.items()})


def prompt_counts(p: pd.DataFrame) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """Per benchmark: (compositions, new_tokens, passes), counts as [prompt, composition] arrays, NaN where not run."""
    counts = {}
    for bench, rows in p.groupby("benchmark", sort=True):
        table = rows.pivot_table(index="prompt", columns="composition", values=["new_tokens", "passes"], aggfunc="sum")
        comps = list(table["new_tokens"].columns)
        counts[bench] = comps, table["new_tokens"][comps].to_numpy(float), table["passes"][comps].to_numpy(float)
    return counts


def _paired(counts: dict, compositions: list[str]) -> dict[str, tuple[dict[str, int], np.ndarray]]:
    """Per benchmark: ({composition: column}, mask of the prompts every one of `compositions` ran)."""
    out = {}
    for bench, (comps, tokens, passes) in counts.items():
        cols = {c: comps.index(c) for c in compositions if c in comps}
        out[bench] = cols, ~np.isnan(tokens[:, list(cols.values())] + passes[:, list(cols.values())]).any(axis=1)
    return out


def _tau_ci(counts: dict, compositions: list[str], statistic: Callable[[Taus], np.ndarray], n_boot: int,
            seed: int) -> tuple[float, float, float, float]:
    num, den, strata = {}, {}, {}
    for bench, (cols, keep) in _paired(counts, compositions).items():
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
    return _tau_ci(prompt_counts(p), list(p.composition.unique()), statistic, n_boot, seed)


@dataclass
class _Setting:
    """One (target, backbone, temperature): its counts, benchmarks and evaluated compositions."""
    roles: Roles
    counts: dict[str, tuple[list[str], np.ndarray, np.ndarray]]  # prompt_counts of the setting
    benches: list[str]  # in the order of roles.domains, then others
    pairs: set[tuple[str, str]]  # (composition, benchmark) evaluated
    present: list[str]  # compositions evaluated on every benchmark of the setting
    drafters: dict[str, str]  # composition -> its drafters, "a|b"
    routing: pd.DataFrame  # replay-scored routed cycles of the setting (taps.aggregate.routing_rows), maybe empty
    n_boot: int

    def mean(self, t: Taus, c: str) -> np.ndarray:
        return np.mean([t[(c, b)] for b in self.benches], axis=0)

    def balanced(self, t: Taus, c: str | Callable[[str], str]) -> np.ndarray:
        """Domain-balanced mean: over domains, of the mean over the domain's benchmarks (an unknown
        domain is the benchmark's own). c: a composition, or benchmark -> the composition read there."""
        pick = c if callable(c) else lambda _: c
        by_domain: dict[str, list[np.ndarray]] = {}
        for b in self.benches:
            if pick(b) is not None:
                by_domain.setdefault(self.roles.domains.get(b, b), []).append(t[(pick(b), b)])
        return np.mean([np.mean(taus, axis=0) for taus in by_domain.values()], axis=0)

    def worst(self, t: Taus, c: str) -> np.ndarray:
        return np.min([t[(c, b)] for b in self.benches], axis=0)

    def point_mean(self, c: str) -> float:
        return float(np.mean([np.nansum(tok[:, comps.index(c)]) / np.nansum(pas[:, comps.index(c)])
                              for comps, tok, pas in self.counts.values()]))

    def spec(self, text: str, a: str, b: str, compositions: list[str], statistic: Callable[[Taus], np.ndarray],
             benches: list[str] | None = None, decides: bool = True) -> Spec:
        """A comparison whose statistic reads the taus of `compositions` on `benches` (default: all)."""
        counts = {bench: self.counts[bench] for bench in benches or self.benches}
        prompts = min((int(keep.sum()), bench) for bench, (_, keep) in _paired(counts, compositions).items())
        return Spec(text, a, b, lambda seed: _tau_ci(counts, compositions, statistic, self.n_boot, seed), prompts,
                    decides)

    def beats(self, text: str, a: str, b: str, stat: Callable[[Taus, str], np.ndarray],
              benches: list[str] | None = None, decides: bool = True) -> Spec:
        return self.spec(text, a, b, [a, b], lambda t: stat(t, a) - stat(t, b), benches, decides)

    def routed(self, name: str) -> pd.DataFrame | None:
        """The routed cycles of composition `name` with every drafter's tree scored (replay), or None."""
        rows = self.routing[self.routing.composition == name] if len(self.routing) else self.routing
        return rows if len(rows) and "remaining" in rows else None

    def same_cycles(self, text: str, a: str, b: str, pc: PairedCounts, margin: float | None = None) -> Spec:
        """A comparison on the same cycles (`taps.same_contexts`), paired by prompt within each benchmark."""
        prompts = min((len(pc.numerators[k]), pc.strata[k]) for k in pc.numerators)
        return Spec(text, a, b, lambda seed: paired_ratio_test(*pc.args, n_boot=self.n_boot, seed=seed), prompts,
                    margin=margin)

    def missing(self, names) -> list[str]:
        return [c for c in names if c not in self.present]

    def roster(self, names: list[str]) -> list[str]:
        """The names of a claim's roster evaluated here (on every benchmark); the others are skipped."""
        return [c for c in names if c in self.present]

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
    specs = [s.beats(f"{m} vs {o} on {display_name(b)}", m, o, lambda t, c, b=b: t[(c, b)], [b])
             for b, m, o in s.matched() if (m, b) in s.pairs and (o, b) in s.pairs]
    return specs or "needs both experts on a benchmark of known domain"


def _claim_b(s: _Setting) -> list[Spec] | str:
    experts, mixtures = list(s.roles.experts.values()), [m for m in s.roles.mixtures if m in s.present]
    if s.missing(experts) or not mixtures:
        return _absent(s.missing(experts) + ([] if mixtures else s.roles.mixtures))
    return [s.beats(f"{m} vs {e}: worst benchmark", m, e, s.worst) for m in mixtures for e in experts]


def _claim_c(s: _Setting) -> list[Spec] | str:
    averaged, rivals = s.roles.averaged, s.roster(s.roles.averaged_rivals)
    if averaged not in s.present or not rivals:
        return _absent(s.missing([averaged]) or s.roles.averaged_rivals)
    return [s.beats(f"{c} vs {averaged}: mean tau", c, averaged, s.mean) for c in rivals]


def _claim_d(s: _Setting) -> list[Spec] | str:
    """Decided on the domain-balanced mean (math and chat weigh equally, whatever the benchmark count);
    the plain mean and the oracle (the matched expert on every benchmark) are reported beside it."""
    rc, experts = s.roles.route_confidence, list(s.roles.experts.values())
    if s.missing([rc] + experts):
        return _absent(s.missing([rc] + experts))
    specs = [s.beats(f"{rc} vs {e}: domain-balanced mean tau", rc, e, s.balanced) for e in experts]
    specs += [s.beats(f"{rc} vs {e}: mean tau", rc, e, s.mean, decides=False) for e in experts]
    expert_of = {b: s.roles.experts.get(s.roles.domains.get(b)) for b in s.benches}  # None: no matched expert
    if any(expert_of.values()):
        def routing_minus_oracle(t):
            return s.balanced(t, lambda b: rc if expert_of[b] else None) - s.balanced(t, expert_of.get)
        specs.append(s.spec(f"{rc} vs oracle (matched expert per benchmark): domain-balanced mean tau", rc,
                            "oracle", [rc] + experts, routing_minus_oracle, [b for b in s.benches if expert_of[b]],
                            decides=False))
    return specs


def _claim_e(s: _Setting) -> list[Spec] | str:
    merged, rivals = s.roles.merged, s.roster(s.roles.merged_rivals)
    if merged not in s.present or not rivals:
        return _absent(s.missing([merged]) or s.roles.merged_rivals)
    return [s.beats(f"{merged} vs {c}: mean tau", merged, c, s.mean) for c in rivals]


def _claim_e_work(s: _Setting) -> list[Spec] | str:
    merged, rivals = s.roles.merged, s.roster(s.roles.merged_work_rivals)
    if not s.roles.merged_work_rivals:
        return "findings.merged_work_rivals names no composition given the merged tree's node budget"
    if merged not in s.present or not rivals:
        return _absent(s.missing([merged]) or s.roles.merged_work_rivals)
    return [s.beats(f"{merged} vs {c} (same node budget): mean tau", merged, c, s.mean) for c in rivals]


INTERPOLATION_PAIRS = ("shared", "independent", "control")  # claim (i)'s lines, by role


def _claim_i(s: _Setting) -> list[Spec] | str:
    """At the midpoint: the experts' average from a shared initialisation against the average from independent
    ones, and an expert against its average with a same-data copy from another initialisation."""
    lines = s.roles.interpolations
    if not set(INTERPOLATION_PAIRS) <= set(lines) or any(0.5 not in lines[p] for p in INTERPOLATION_PAIRS):
        return ("needs interpolations shared, independent and control with alpha 0.5 (config interpolations, "
                "interpolation_alphas)")
    shared, independent, control, expert = (lines["shared"][0.5], lines["independent"][0.5], lines["control"][0.5],
                                            lines["control"][0.0])
    if s.missing([shared, independent, control, expert]):
        return _absent(s.missing([shared, independent, control, expert]))
    return [s.beats(f"{shared} vs {independent}: mean tau (experts averaged from one initialisation vs from two)",
                    shared, independent, s.mean),
            s.beats(f"{expert} vs {control}: mean tau (an expert vs its average with a same-data copy from another "
                    "initialisation)", expert, control, s.mean)]


def _routed_cycles(s: _Setting) -> pd.DataFrame | str:
    rc = s.roles.route_confidence
    rows = s.routed(rc)
    if rows is None:
        return (f"needs {rc}'s cycles with both drafters' trees scored on the same contexts, which replay records "
                "(evaluate.replay)")
    return rows


def _claim_f(s: _Setting) -> list[Spec] | str:
    """On the same cycles of the confidence-routed run: the tree each signal would keep, scored by replay."""
    rows = _routed_cycles(s)
    if isinstance(rows, str):
        return rows
    pc = signal_counts(rows)
    if pc is None:
        return "no routed cycle left uncut by the end of its turn"
    return [s.same_cycles(f"confidence vs entropy picks on the same {pc.cycles} cycles of "
                          f"{s.roles.route_confidence}: tokens per pass, mean over benchmarks", "confidence",
                          "entropy", pc)]


def _claim_g(s: _Setting) -> list[Spec] | str:
    """Both experts' trees on the same cycles of the confidence-routed run, at the fixed step k."""
    rows = _routed_cycles(s)
    if isinstance(rows, str):
        return rows
    names, k, specs = rows.drafters.iloc[0].split("|"), s.roles.depth_step, []
    for bench, m, o in s.matched():
        dm, do = s.drafters.get(m), s.drafters.get(o)
        if dm not in names or do not in names:
            continue
        pc = step_counts(rows, bench, names.index(dm), names.index(do), k)
        if pc is not None and pc.cycles >= max(s.roles.min_cycles, 1):
            specs.append(s.same_cycles(
                f"{m} vs {o} on {display_name(bench)}: log-odds advantage in acceptance at step {k} minus step 1, "
                f"on the {pc.cycles} cycles where both reached step {k}", m, o, pc, margin=0.0))
    return specs or (f"needs both experts among {s.roles.route_confidence}'s drafters and >= {s.roles.min_cycles} "
                     f"uncut cycles where both reached step {k} on a benchmark of known domain")


def _claim_h(s: _Setting) -> list[Spec] | str:
    merged_equal, singles = s.roles.merged_equal, s.roster(s.roles.singles)
    if merged_equal not in s.present or not singles:
        return _absent(s.missing([merged_equal]) or s.roles.singles)
    best = max(singles, key=s.point_mean)  # chosen once on the full data, held fixed in every replicate
    return [s.beats(f"{merged_equal} vs best single ({best} of {', '.join(singles)}): mean tau", merged_equal, best,
                    s.mean)]


CLAIMS: dict[str, tuple[str, Callable[[_Setting], list[Spec] | str]]] = {
    "a": ("matched-domain specialisation: on every benchmark the expert of its domain beats the other expert",
          _claim_a),
    "b": ("mixtures are more robust across benchmarks: each mixture's worst-benchmark tau beats each expert's",
          _claim_b),
    "c": ("averaging is the weakest: each composition of the roster (findings.averaged_rivals) beats weight "
          "averaging in mean tau", _claim_c),
    "d": ("confidence routing beats single-domain drafters in domain-balanced mean tau (math and chat benchmarks "
          "weigh equally)", _claim_d),
    "e": ("merged-tree verification is best: it beats each composition of the roster (findings.merged_rivals) in "
          "mean tau", _claim_e),
    "e2": ("(e) at equal verification work: merged-tree verification beats each composition of the roster "
           "(findings.merged_work_rivals: drafters given the merged tree's node budget) in mean tau", _claim_e_work),
    "f": ("confidence beats entropy as a routing signal: on the same cycles, the tree confidence picks is accepted "
          "longer than the one entropy picks (tokens per pass, mean over benchmarks)", _claim_f),
    "g": ("deeper speculative steps favour the matched expert: on the same cycles, its advantage in log-odds of "
          "acceptance at step k (findings.depth_step; cycles where both experts reached step k) exceeds its "
          "advantage at step 1", _claim_g),
    "h": ("ours: merged trees at a single drafter's budget beat the best single drafter of the roster "
          "(findings.singles) in mean tau (best chosen on the full data, held fixed in the bootstrap)", _claim_h),
    "i": ("ours: averaging fails when the experts start from different initialisations: the experts' midpoint "
          "from one initialisation beats the midpoint from two, and an expert beats its midpoint with a same-data "
          "copy from another initialisation (mean tau; config interpolations)", _claim_i),
}
ROSTERS = {"c": "averaged_rivals", "e": "merged_rivals", "e2": "merged_work_rivals", "h": "singles"}  # claim -> roster


def _p(p: float) -> str:
    return "" if pd.isna(p) else f"{p:.2g}" if p >= 0.001 else "<0.001"  # the bootstrap resolves ~1 / n_boot


def _summary(rows: pd.DataFrame, roster: str) -> str:
    deciding = rows[rows.decides]
    worst = deciding.loc[deciding["diff"].idxmin()]
    numbers = f"{worst['diff']:+.2f} [{worst['low']:+.2f}, {worst['high']:+.2f}] ({worst['comparison']})"
    if len(deciding) == 1:
        text = f"diff {numbers}, p {'' if worst['p'] < 0.001 else '= '}{_p(worst['p'])}"
    else:
        counts = deciding.verdict.value_counts()
        text = (f"{counts.get('reproduced', 0)} of {len(deciding)} comparisons reproduced, "
                f"{counts.get('equivalent', 0)} equivalent (Holm); smallest diff {numbers}")
    return text + roster


def _roster_note(s: _Setting, letter: str) -> str:
    if letter not in ROSTERS:
        return ""
    names = getattr(s.roles, ROSTERS[letter])
    skipped = [c for c in names if c not in s.present]
    return (f"; roster {ROSTERS[letter]}: compared {', '.join(s.roster(names))}"
            + (f"; not evaluated here: {', '.join(skipped)}" if skipped else ""))


def _too_few(specs: list[Spec], min_prompts: int) -> str:
    n, bench = min(spec.prompts for spec in specs)
    return f"n = {n} paired prompts on {display_name(bench)}, fewer than min_prompts = {min_prompts}" \
        if n < min_prompts else ""


def findings(P: pd.DataFrame, R: pd.DataFrame | None = None, roles: Roles = Roles(), seed: int = 0,
             n_boot: int = 2000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Verdicts on claims (a)-(i) per (target, backbone, temperature): (claims_df, comparisons_df).
    P: per-prompt counts (`taps.aggregate.prompt_rows`); R: routed cycles (`routing_rows`) for (f) and (g)."""
    claims, comparisons = [], []
    for key, p in P.groupby(SETTING, sort=True):
        setting = dict(zip(SETTING, key))
        order = {b: i for i, b in enumerate(roles.domains)}
        benches = sorted(p.benchmark.unique(), key=lambda b: (order.get(b, len(order)), b))
        per_comp = p.groupby("composition").benchmark.nunique()
        routing = pd.DataFrame()
        if R is not None and len(R):
            routing = R[(R[SETTING] == pd.Series(setting)).all(axis=1)]
        drafters = dict(zip(p.composition, p.drafters)) if "drafters" in p else {}
        s = _Setting(roles, prompt_counts(p), benches, set(zip(p.composition, p.benchmark)),
                     sorted(per_comp.index[per_comp == len(benches)]), drafters, routing, n_boot)
        for letter, (statement, build) in CLAIMS.items():
            specs = build(s)
            head = {**setting, "claim": letter, "statement": statement}
            reason = specs if isinstance(specs, str) else _too_few(specs, roles.min_prompts)
            if reason:
                claims.append({**head, "verdict": "not evaluated", "comparisons": 0, "reason": reason, "summary": ""})
                continue
            rows = pd.DataFrame([{**setting, "claim": letter, "comparison": spec.text, "a": spec.a, "b": spec.b,
                                  "decides": spec.decides, "prompts": spec.prompts[0], "margin": spec.margin,
                                  **dict(zip(["diff", "low", "high", "p"], spec.run(seed)))} for spec in specs])
            rows, verdict = decide(rows, roles.margin)
            comparisons.append(rows)
            claims.append({**head, "verdict": verdict, "comparisons": len(rows), "reason": "",
                           "summary": _summary(rows, _roster_note(s, letter))})
    comparisons = pd.concat(comparisons, ignore_index=True) if comparisons else pd.DataFrame()
    return pd.DataFrame(claims, columns=CLAIM_COLUMNS), comparisons.reindex(columns=COMPARISON_COLUMNS)


def _where(row) -> str:
    return f"{row.target} / {row.backbone} / T={row.temperature:g}"


def findings_markdown(claims: pd.DataFrame, comparisons: pd.DataFrame, roles: Roles = Roles()) -> str:
    """results/findings.md: how verdicts are decided, then per claim its verdicts and comparisons."""
    lines = ["# Findings: the paper's claims, decided by calibrated paired tests", "",
             "Each claim is one or more comparisons \"A beats B\", each the paired difference of a statistic of "
             "tau (sum of new tokens / sum of target passes over a benchmark's prompts), with its 95% CI and "
             "two-sided p from a studentized bootstrap (2000 replicates; prompts resampled within each benchmark, "
             "the same prompts for every composition; each replicate studentized by its jackknife SE; symmetric "
             "interval whose critical value is at least the paired t-test's). Chosen by calibration on simulated "
             "prompts shaped like ours (10 and 20 prompts, 1-4 benchmarks): it calls a difference that is not there "
             "~4% of the time and covers the true one ~96%, where the percentile bootstrap did 8-9% and 91% "
             "(tests/test_calibration.py).", "",
             f"- comparison: **equivalent** if its whole 95% CI lies within +/-{roles.margin:g} tau (margin; a "
             "significant but negligible difference is equivalent); otherwise **reproduced** / **not reproduced** "
             f"if its Holm-adjusted p (Holm over the claim's deciding comparisons, family-wise {ALPHA:g}) is below "
             f"{ALPHA:g} with diff above / below 0; else **inconclusive**;",
             "- claim: not reproduced if any deciding comparison is; reproduced if all are; equivalent if none is "
             "inconclusive and one is equivalent; inconclusive otherwise;",
             f"- **not evaluated** when a composition it needs is absent, or a benchmark it uses has fewer than "
             f"{roles.min_prompts} paired prompts (min_prompts; the reason gives n);",
             "- compositions are named per claim (config `findings`): (c) averaged_rivals: "
             f"{', '.join(roles.averaged_rivals)}; (e) merged_rivals: {', '.join(roles.merged_rivals)}; (e2) "
             f"merged_work_rivals: {', '.join(roles.merged_work_rivals) or 'none'}; (h) singles: "
             f"{', '.join(roles.singles)}; a name not evaluated in a setting is skipped and the summary says which "
             "were compared;",
             "- (d) is decided on the domain-balanced mean (mean over domains of the mean over the domain's "
             "benchmarks); its plain-mean and routing-vs-oracle (matched expert per benchmark) rows are reported, "
             "not deciding (decides = no, read at their own p);",
             f"- (f) and (g) read the cycles of {roles.route_confidence} that replay scored: both drafters' "
             "trees on the same contexts, cycles cut by the turn's end left out; (f) compares the tree each signal "
             f"would keep, (g) the experts' log-odds of acceptance at step {roles.depth_step} minus step 1 on the "
             f"cycles where both reached the step (at least {roles.min_cycles}); (g) has no equivalence margin;",
             "- (e2) and (i) go beyond the paper: (e) with the rivals given the merged tree's node budget, and "
             "averaging's dependence on the experts' initialisations (interpolation lines "
             f"{', '.join(roles.interpolations) or 'none configured'}; figure interpolation).", ""]
    for letter, (statement, _) in CLAIMS.items():
        lines += [f"## ({letter}) {statement}", ""]
        for row in claims[claims.claim == letter].itertuples():
            detail = row.reason if row.verdict == "not evaluated" else row.summary
            lines.append(f"- {_where(row)}: **{row.verdict}** — {detail}")
        rows = comparisons[comparisons.claim == letter]
        if len(rows):
            lines += ["", "| setting | comparison | n | diff | 95% CI | p | p (Holm) | decides | verdict |",
                      "|---|---|---|---|---|---|---|---|---|"]
            lines += [f"| {_where(r)} | {r.comparison} | {r.prompts} | {r.diff:+.2f} | [{r.low:+.2f}, {r.high:+.2f}] "
                      f"| {_p(r.p)} | {_p(r.p_holm)} | {'yes' if r.decides else 'no'} "
                      f"| {r.verdict} |" for r in rows.itertuples()]
        lines.append("")
    return "\n".join(lines)
