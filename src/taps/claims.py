"""The paper's claims (a)-(g) and ours ((e2), (h), (i), (j)): which composition plays which part (Roles), and the
comparisons of each claim.

A claim's builder reads one setting (`Setting`: a target, backbone and temperature, its per-prompt counts, the
compositions evaluated on every benchmark, the routed cycles replay scored) and returns its comparisons (`Spec`s),
or the reason it cannot be evaluated (a composition it needs is absent). Claims (a)-(e2), (h), (i) and (j) compare
taus across runs (`taps.comparisons`); (f) and (g) compare trees on the same cycles (`taps.same_contexts`). Each
claim's compositions are named in Roles (config `findings`), never "every other composition". Some comparisons are
reported without deciding (`decides` False, read at their own p): claim (d)'s plain-mean rows and the vs-oracle
rows of (d) and (j). CLAIMS registers the builders by letter with their statements; `taps.findings` turns their
comparisons into verdicts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from taps.benchmarks import DOMAINS, display_name
from taps.comparisons import Spec, Taus, paired_prompts, tau_ci
from taps.metrics import paired_ratio_test
from taps.same_contexts import PairedCounts, signal_counts, step_counts


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
    # claim (j): compositions drafting with one drafter per cycle; the best faces `route_confidence`
    selections: list[str] = field(default_factory=lambda: ["select-leader", "select-ucb", "select-confidence",
                                                           "select-depth2"])
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


@dataclass
class Setting:
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

    def point_taus(self, c: str) -> dict[tuple[str, str], float]:
        """c's tau on each benchmark (sums over the benchmark's prompts)."""
        return {(c, b): np.nansum(tok[:, comps.index(c)]) / np.nansum(pas[:, comps.index(c)])
                for b, (comps, tok, pas) in self.counts.items()}

    def point_mean(self, c: str) -> float:
        return float(np.mean(list(self.point_taus(c).values())))

    def point_balanced(self, c: str) -> float:
        return float(self.balanced(self.point_taus(c), c))

    def spec(self, text: str, a: str, b: str, compositions: list[str], statistic: Callable[[Taus], np.ndarray],
             benches: list[str] | None = None, decides: bool = True) -> Spec:
        """A comparison whose statistic reads the taus of `compositions` on `benches` (default: all)."""
        counts = {bench: self.counts[bench] for bench in benches or self.benches}
        prompts = min((int(keep.sum()), bench) for bench, (_, keep) in paired_prompts(counts, compositions).items())
        return Spec(text, a, b, lambda seed: tau_ci(counts, compositions, statistic, self.n_boot, seed), prompts,
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


def _claim_a(s: Setting) -> list[Spec] | str:
    specs = [s.beats(f"{m} vs {o} on {display_name(b)}", m, o, lambda t, c, b=b: t[(c, b)], [b])
             for b, m, o in s.matched() if (m, b) in s.pairs and (o, b) in s.pairs]
    return specs or "needs both experts on a benchmark of known domain"


def _claim_b(s: Setting) -> list[Spec] | str:
    experts, mixtures = list(s.roles.experts.values()), [m for m in s.roles.mixtures if m in s.present]
    if s.missing(experts) or not mixtures:
        return _absent(s.missing(experts) + ([] if mixtures else s.roles.mixtures))
    return [s.beats(f"{m} vs {e}: worst benchmark", m, e, s.worst) for m in mixtures for e in experts]


def _claim_c(s: Setting) -> list[Spec] | str:
    averaged, rivals = s.roles.averaged, s.roster(s.roles.averaged_rivals)
    if averaged not in s.present or not rivals:
        return _absent(s.missing([averaged]) or s.roles.averaged_rivals)
    return [s.beats(f"{c} vs {averaged}: mean tau", c, averaged, s.mean) for c in rivals]


def _claim_d(s: Setting) -> list[Spec] | str:
    """Decided on the domain-balanced mean (math and chat weigh equally, whatever the benchmark count);
    the plain mean and the oracle (the matched expert on every benchmark) are reported beside it."""
    rc, experts = s.roles.route_confidence, list(s.roles.experts.values())
    if s.missing([rc] + experts):
        return _absent(s.missing([rc] + experts))
    specs = [s.beats(f"{rc} vs {e}: domain-balanced mean tau", rc, e, s.balanced) for e in experts]
    specs += [s.beats(f"{rc} vs {e}: mean tau", rc, e, s.mean, decides=False) for e in experts]
    return specs + _vs_oracle(s, rc)


def _vs_oracle(s: Setting, c: str) -> list[Spec]:
    """c against the oracle (the matched expert on every benchmark of known domain), domain-balanced; reported,
    not deciding; none when no benchmark has a matched expert."""
    experts = list(s.roles.experts.values())
    expert_of = {b: s.roles.experts.get(s.roles.domains.get(b)) for b in s.benches}  # None: no matched expert
    if not any(expert_of.values()):
        return []

    def minus_oracle(t):
        return s.balanced(t, lambda b: c if expert_of[b] else None) - s.balanced(t, expert_of.get)
    return [s.spec(f"{c} vs oracle (matched expert per benchmark): domain-balanced mean tau", c, "oracle",
                   [c] + experts, minus_oracle, [b for b in s.benches if expert_of[b]], decides=False)]


def _claim_e(s: Setting) -> list[Spec] | str:
    merged, rivals = s.roles.merged, s.roster(s.roles.merged_rivals)
    if merged not in s.present or not rivals:
        return _absent(s.missing([merged]) or s.roles.merged_rivals)
    return [s.beats(f"{merged} vs {c}: mean tau", merged, c, s.mean) for c in rivals]


def _claim_e_work(s: Setting) -> list[Spec] | str:
    merged, rivals = s.roles.merged, s.roster(s.roles.merged_work_rivals)
    if not s.roles.merged_work_rivals:
        return "findings.merged_work_rivals names no composition given the merged tree's node budget"
    if merged not in s.present or not rivals:
        return _absent(s.missing([merged]) or s.roles.merged_work_rivals)
    return [s.beats(f"{merged} vs {c} (same node budget): mean tau", merged, c, s.mean) for c in rivals]


INTERPOLATION_PAIRS = ("shared", "independent", "control")  # claim (i)'s lines, by role


def _claim_i(s: Setting) -> list[Spec] | str:
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


def _claim_j(s: Setting) -> list[Spec] | str:
    """The best selection (domain-balanced point tau, chosen on the full data and held fixed in the bootstrap)
    against confidence routing; the best selection against the oracle is reported beside it."""
    rc, selections = s.roles.route_confidence, s.roster(s.roles.selections)
    if not s.roles.selections:
        return "findings.selections names no composition drafting with one drafter per cycle"
    if rc not in s.present or not selections:
        return _absent(s.missing([rc]) or s.roles.selections)
    best = max(selections, key=s.point_balanced)
    specs = [s.beats(f"{best} (best of {', '.join(selections)}) vs {rc}: domain-balanced mean tau", best, rc,
                     s.balanced)]
    return specs + ([] if s.missing(s.roles.experts.values()) else _vs_oracle(s, best))


def _routed_cycles(s: Setting) -> pd.DataFrame | str:
    rc = s.roles.route_confidence
    rows = s.routed(rc)
    if rows is None:
        return (f"needs {rc}'s cycles with both drafters' trees scored on the same contexts, which replay records "
                "(evaluate.replay)")
    return rows


def _claim_f(s: Setting) -> list[Spec] | str:
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


def _claim_g(s: Setting) -> list[Spec] | str:
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


def _claim_h(s: Setting) -> list[Spec] | str:
    merged_equal, singles = s.roles.merged_equal, s.roster(s.roles.singles)
    if merged_equal not in s.present or not singles:
        return _absent(s.missing([merged_equal]) or s.roles.singles)
    best = max(singles, key=s.point_mean)  # chosen once on the full data, held fixed in every replicate
    return [s.beats(f"{merged_equal} vs best single ({best} of {', '.join(singles)}): mean tau", merged_equal, best,
                    s.mean)]


CLAIMS: dict[str, tuple[str, Callable[[Setting], list[Spec] | str]]] = {
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
    "j": ("ours: one drafter per cycle, chosen before drafting (from the acceptance seen so far, or from each "
          "drafter's confidence at the root or in its first two levels), keeps confidence routing's tau with one "
          "tree per cycle: the best of the selections (findings.selections; chosen on the full data, held fixed "
          "in the bootstrap) beats route-confidence, which drafts with both experts every cycle, in "
          "domain-balanced mean tau (equivalent: matches it)", _claim_j),
}
ROSTERS = {"c": "averaged_rivals", "e": "merged_rivals", "e2": "merged_work_rivals", "h": "singles",
           "j": "selections"}  # claim -> roster
