"""The paper's tables, built only from the saved result frames, and their Markdown, LaTeX and CSV files.

Every table takes E (`evaluations.parquet`, one row per evaluation, built by taps.aggregate; the
replay table also the `replay` frame) and returns a DataFrame of display strings: no number is
typed in by hand or averaged twice. A blank cell means the evaluation (or the paper's number)
does not exist. `main_numbers` is the tidy numeric form of the main table, meant for its CSV.
The writers need neither jinja2 nor tabulate.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from taps.aggregate import replay_error, temperature_pairs
from taps.benchmarks import DISPLAY_NAMES, DOMAINS
from taps.metrics import benchmark_mean_tau, paired_ratio_bootstrap

BENCHMARKS = DISPLAY_NAMES
AVERAGE = "average"  # benchmark name of the Avg. column (also the paper CSV's name for it)
DISPLAY = {**BENCHMARKS, AVERAGE: "Avg."}
ROW_KEYS = ["target", "backbone", "temperature", "composition"]
MULTI_KINDS = ("route-confidence", "route-entropy", "merged-tree", "select-leader", "select-ucb", "select-confidence")
NAN = float("nan")


def fmt_ci(value: float, low: float = NAN, high: float = NAN, signed: bool = False) -> str:
    """'3.17 [2.70, 3.64]'; the value alone when the CI is missing; '' when the value is missing."""
    if pd.isna(value):
        return ""
    f = "{:+.2f}" if signed else "{:.2f}"
    if pd.isna(low) or pd.isna(high):
        return f.format(value)
    return f"{f.format(value)} [{f.format(low)}, {f.format(high)}]"


def benchmark_order(E: pd.DataFrame) -> list[str]:
    """The four paper benchmarks, then any other benchmark of E in order of first appearance."""
    return [*BENCHMARKS, *(b for b in pd.unique(E["benchmark"]) if b not in BENCHMARKS)]


def _ordered(E: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """E sorted by target, backbone (first appearance), temperature (ascending), composition (`order`,
    else first appearance; compositions outside an explicit `order` are dropped), then benchmark."""
    ranks = {c: {v: i for i, v in enumerate(pd.unique(E[c]))} for c in ("target", "backbone")}
    ranks["composition"] = {v: i for i, v in enumerate(pd.unique(E["composition"]) if order is None else order)}
    ranks["benchmark"] = {b: i for i, b in enumerate(benchmark_order(E))}
    E = E[E["composition"].isin(list(ranks["composition"]))]
    return E.sort_values([*ROW_KEYS, "benchmark"], kind="stable",
                         key=lambda s: s.map(ranks[s.name]) if s.name in ranks else s)


def _labels(key: tuple) -> dict:
    """Display columns of one (target, backbone, temperature, composition) row."""
    target, backbone, temperature, composition = key
    return {"target": target, "backbone": backbone, "T": f"{temperature:g}", "composition": composition}


def _mean_of_four(values: dict) -> float:
    """Mean of the four paper benchmarks' values; NaN unless all four exist."""
    four = [values.get(b, NAN) for b in BENCHMARKS]
    return NAN if any(pd.isna(v) for v in four) else sum(four) / len(four)


ORACLE = "oracle: matched expert"  # the derived row `with_oracle` adds (tables only, never run)


def with_oracle(E: pd.DataFrame, experts: dict[str, str], domains: dict[str, str] = DOMAINS) -> pd.DataFrame:
    """E plus, per (target, backbone, temperature), a row per benchmark for the expert of the benchmark's domain
    (`experts`: domain -> composition; `domains`: benchmark -> domain), named ORACLE with kind 'oracle': what
    choosing the right single drafter per benchmark, knowing the benchmark, would give. Nothing is added where
    an expert was not evaluated."""
    rows = []
    for _, r in E.iterrows():
        if experts.get(domains.get(r.benchmark)) == r.composition:
            rows.append({**r.to_dict(), "composition": ORACLE, "kind": "oracle"})
    return pd.concat([E, pd.DataFrame(rows)], ignore_index=True) if rows else E


def main_numbers(E: pd.DataFrame, paper: pd.DataFrame | None = None,
                 order: Sequence[str] | None = None) -> pd.DataFrame:
    """Tidy main table: one row per (target, backbone, temperature, composition, benchmark) with tau,
    tau_low, tau_high and paper_tau; every benchmark of `benchmark_order` plus 'average' appears (NaN
    where missing). The average is the mean of the four taus (no CI); the paper's average is its
    reported 'average' row, else the mean of its four values. Paper rows match on backbone,
    composition, benchmark and temperature (the paper has one target)."""
    reported = {} if paper is None else {
        (r.backbone, r.composition, r.benchmark, float(r.temperature)): float(r.tau)
        for r in paper.itertuples() if not pd.isna(r.tau)}
    benchmarks = benchmark_order(E)
    rows = []
    for key, group in _ordered(E, order).groupby(ROW_KEYS, sort=False):
        ours = group.set_index("benchmark")
        _, backbone, temperature, composition = key
        theirs = {b: reported.get((backbone, composition, b, float(temperature)), NAN) for b in [*benchmarks, AVERAGE]}
        if pd.isna(theirs[AVERAGE]):
            theirs[AVERAGE] = _mean_of_four(theirs)
        for b in [*BENCHMARKS, AVERAGE, *benchmarks[len(BENCHMARKS):]]:
            if b == AVERAGE:
                tau, low, high = _mean_of_four(ours["tau"].to_dict()), NAN, NAN
            elif b in ours.index:
                tau, low, high = ours.loc[b, ["tau", "tau_low", "tau_high"]]
            else:
                tau, low, high = NAN, NAN, NAN
            rows.append({**dict(zip(ROW_KEYS, key)), "benchmark": b, "tau": tau, "tau_low": low,
                         "tau_high": high, "paper_tau": theirs[b]})
    return pd.DataFrame(rows)


def main_table(E: pd.DataFrame, paper: pd.DataFrame | None = None,
               order: Sequence[str] | None = None) -> pd.DataFrame:
    """The paper's main table: one row per (target, backbone, T, composition), a column per benchmark
    holding 'tau [low, high]', then Avg. (mean of the four, no CI), then any extra benchmark.

    With `paper`, a `source` column appears and each row is followed by a 'paper' line holding the
    paper's reported tau (blank where it reports none); rows the paper does not report at all get no
    paper line.
    """
    numbers = main_numbers(E, paper, order)
    rows = []
    for key, group in numbers.groupby(ROW_KEYS, sort=False):
        g = group.set_index("benchmark")
        source = {} if paper is None else {"source": "ours"}
        rows.append({**_labels(key), **source,
                     **{DISPLAY.get(b, b): fmt_ci(r.tau, r.tau_low, r.tau_high) for b, r in g.iterrows()}})
        if paper is not None and g["paper_tau"].notna().any():
            rows.append({**_labels(key), "source": "paper",
                         **{DISPLAY.get(b, b): fmt_ci(v) for b, v in g["paper_tau"].items()}})
    return pd.DataFrame(rows)


def _flag(value) -> str:
    """'yes' / 'no' for a bool, '' for a missing one."""
    return "" if pd.isna(value) else ("yes" if bool(value) else "no")


def composition_table(E: pd.DataFrame) -> pd.DataFrame:
    """Multi-drafter compositions against the best single drafter, per (target, backbone, T, benchmark).

    The best single drafter is the single-tree composition with the highest tau among the drafters
    the multi-drafter compositions combine (any single composition if none of those was run).
    `nodes vs single` = nodes_per_pass / the best single drafter's: ~2 for merged trees at the
    paper's budget, ~1 at equal budget. `drafter steps/pass`: drafter passes per target pass, every
    drafter's (tree levels, commits and a selection's catch-ups): what drafting costs.
    """
    E = E.reset_index(drop=True)  # the masks below are aligned on E's index
    multi = E["kind"].isin(MULTI_KINDS)
    parts = {name for drafters in E.loc[multi, "drafters"] for name in drafters.split("|")}
    single = (E["kind"] == "single") & E["drafters"].isin(parts)
    single = single if single.any() else E["kind"] == "single"
    rows = []
    for (target, backbone, temperature, benchmark), group in _ordered(E).groupby(
            ["target", "backbone", "temperature", "benchmark"], sort=False):
        if not multi[group.index].any():
            continue
        singles = group[single[group.index]]
        best = singles.loc[[singles["tau"].idxmax()]] if singles["tau"].notna().any() else singles.iloc[:0]
        base = best["nodes_per_pass"].iloc[0] if len(best) else NAN
        for r in pd.concat([best, group[multi[group.index]]]).itertuples():
            rows.append({**_labels((target, backbone, temperature, r.composition)),
                         "benchmark": DISPLAY.get(benchmark, benchmark),
                         "budget": "" if pd.isna(r.budget) else r.budget, "trie": _flag(r.trie),
                         "tau": fmt_ci(r.tau, r.tau_low, r.tau_high), "nodes/pass": fmt_ci(r.nodes_per_pass),
                         "nodes vs single": fmt_ci(r.nodes_per_pass / base),
                         "drafter steps/pass": fmt_ci(getattr(r, "drafter_steps_per_pass", NAN))})
    return pd.DataFrame(rows)


def _shares(row) -> str:
    """'math 0.82 / chat 0.18' from a row's drafters and share_0 / share_1; '' when not measured."""
    if pd.isna(row.share_0) or pd.isna(row.share_1):
        return ""
    first, second = row.drafters.split("|")[:2]
    return f"{first} {row.share_0:.2f} / {second} {row.share_1:.2f}"


def routing_table(E: pd.DataFrame) -> pd.DataFrame:
    """Routing shares of the routed and merged compositions: one row per (target, backbone, T,
    composition), a column per benchmark holding each drafter's share of cycles."""
    columns = [DISPLAY.get(b, b) for b in benchmark_order(E)]
    rows = []
    for key, group in _ordered(E[E["kind"].isin(MULTI_KINDS)]).groupby(ROW_KEYS, sort=False):
        cells = {DISPLAY.get(r.benchmark, r.benchmark): _shares(r) for r in group.itertuples()}
        rows.append({**_labels(key), **{c: cells.get(c, "") for c in columns}})
    return pd.DataFrame(rows)


def _count(value) -> str:
    """An integer count as text; '' when missing."""
    return "" if pd.isna(value) else str(int(value))


def speed_table(P: pd.DataFrame, E: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Wall-clock speed per (target, backbone, temperature, composition) over its timed prompts (`P`,
    `taps.aggregate.prompt_rows`; vanilla ran on the same turns, right before the engines): prefill ms per
    timed turn (engine, vanilla), the tree (total_tokens/depth/top_k), decode tokens/s (prefill excluded) of
    both and, for a tuned tree, the tokens/s rule tune_tree predicted; the speedup, the mean over
    benchmarks of engine / vanilla decode tokens/s with its 95% bootstrap CI (prompts resampled within each
    benchmark); whether greedy outputs were identical to the target's and on how many turns they were not
    (blank at T > 0). The per-benchmark figures are in `evaluations.parquet`."""
    timed = P[P["vanilla_seconds"].notna() & P["seconds"].notna()] if "vanilla_seconds" in P else P.iloc[:0]
    if timed.empty:
        return pd.DataFrame()
    rows = []
    for key, group in _ordered(timed).groupby(ROW_KEYS, sort=False):
        num, den, strata = {}, {}, {}
        for bench, b in group.groupby("benchmark", sort=False):
            for side, tokens, seconds in (("engine", "timed_tokens", "seconds"),
                                          ("vanilla", "vanilla_new_tokens", "vanilla_seconds")):
                num[(side, bench)], den[(side, bench)], strata[(side, bench)] = b[tokens], b[seconds], bench
        benches = list(dict.fromkeys(group["benchmark"]))
        speedup = paired_ratio_bootstrap(
            num, den, strata, lambda r: sum(r[("engine", b)] / r[("vanilla", b)] for b in benches) / len(benches),
            seed=seed)
        e = E[(E[ROW_KEYS] == pd.Series(dict(zip(ROW_KEYS, key)))).all(axis=1) & (E["timed_turns"] > 0)]
        turns = e["timed_turns"].sum()
        predicted = e["predicted_tokens_per_s"].dropna() if "predicted_tokens_per_s" in e else e.iloc[:0, 0]
        trees = e["tree"].dropna().unique() if "tree" in e else []
        rows.append({**_labels(key), "tree": "|".join(trees), "benchmarks": str(len(benches)),
                     "timed prompts": str(len(group)),
                     "timed turns": str(int(turns)),
                     "prefill ms": f"{(e.prefill_ms * e.timed_turns).sum() / turns:.0f}",
                     "vanilla prefill ms": f"{(e.vanilla_prefill_ms * e.timed_turns).sum() / turns:.0f}",
                     "tokens/s": f"{group.timed_tokens.sum() / group.seconds.sum():.1f}",
                     "vanilla tokens/s": f"{group.vanilla_new_tokens.sum() / group.vanilla_seconds.sum():.1f}",
                     "speedup": fmt_ci(*speedup) + "x",
                     # rule tune_tree's prediction for a tuned tree (development prompts of the drafter's source)
                     "predicted tokens/s": f"{predicted.iloc[0]:.1f}" if len(predicted) else "",
                     "identical": _flag(bool(e.identical.all()) if key[2] == 0 else None),
                     "mismatched turns": _count(e.mismatched_turns.sum(min_count=1))})
    return pd.DataFrame(rows)


def headline_table(P: pd.DataFrame, paper: pd.DataFrame | None = None, order: Sequence[str] | None = None,
                   seed: int = 0) -> pd.DataFrame:
    """The paper's headline table: one row per composition, one column per (temperature, backbone) holding the
    mean tau over the four paper benchmarks [95% bootstrap CI over prompts, resampled within each benchmark]
    and the fewest prompts of a benchmark (n); blank unless the composition ran all four there. With `paper`,
    the paper's reported average beside each (its 'average' row, else the mean of its four)."""
    if P.empty:
        return pd.DataFrame()
    P = P[P.benchmark.isin(BENCHMARKS)]
    reported = {} if paper is None else {
        (r.backbone, r.composition, r.benchmark, float(r.temperature)): float(r.tau)
        for r in paper.itertuples() if not pd.isna(r.tau)}
    columns = [(t, b) for t in sorted(P.temperature.unique()) for b in pd.unique(P.backbone)]
    comps = [c for c in (order or pd.unique(P.composition)) if c in set(P.composition)]
    rows = []
    for target in pd.unique(P.target):
        for comp in comps:
            row = {"target": target, "composition": comp}
            for t, b in columns:
                runs = P[(P.target == target) & (P.composition == comp) & (P.temperature == t) & (P.backbone == b)]
                label = f"T={t:g} {b}"
                if set(runs.benchmark) != set(BENCHMARKS):
                    row[label] = ""
                else:
                    mean, low, high = benchmark_mean_tau(runs, seed)
                    row[label] = f"{fmt_ci(mean, low, high)} (n={runs.groupby('benchmark').size().min()})"
                if paper is not None:
                    theirs = reported.get((b, comp, AVERAGE, float(t)), NAN)
                    if pd.isna(theirs):
                        theirs = _mean_of_four({k: reported.get((b, comp, k, float(t)), NAN) for k in BENCHMARKS})
                    row[f"{label} paper"] = fmt_ci(theirs)
            rows.append(row)
    return pd.DataFrame(rows)


def temperature_table(P: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The temperature effect on the same prompts (`taps.aggregate.temperature_pairs`): per backbone, composition
    and benchmark, the prompts both temperatures ran, tau [95% CI] at each, and the paired difference [95% CI]."""
    T = temperature_pairs(P, seed)
    if T.empty:
        return T
    return pd.DataFrame([{"target": r.target, "backbone": r.backbone, "composition": r.composition,
                          "benchmark": DISPLAY.get(r.benchmark, r.benchmark), "prompts": str(r.prompts),
                          f"tau T={r.cold:g}": fmt_ci(r.tau_cold, r.tau_low_cold, r.tau_high_cold),
                          f"tau T={r.hot:g}": fmt_ci(r.tau_hot, r.tau_low_hot, r.tau_high_hot),
                          "difference": fmt_ci(r.diff, r.diff_low, r.diff_high, signed=True)}
                         for r in T.itertuples()])


def _reference_mismatches(E: pd.DataFrame) -> str:
    """'k of n': turns whose reference disagrees with the target's one-pass argmax, of the turns replayed,
    each reference turn counted once (every T=0 evaluation of a target x benchmark replays the same
    references); '' when no evaluation recorded it."""
    if "reference_mismatched_turns" not in E or E["reference_mismatched_turns"].isna().all():
        return ""
    per_reference = E[E["reference_mismatched_turns"].notna()].groupby(["target", "benchmark"]).agg(
        bad=("reference_mismatched_turns", "max"), turns=("turns", "max"))
    return f"{int(per_reference.bad.sum())} of {int(per_reference.turns.sum())}"


def replay_table(replay: pd.DataFrame, E: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Replay's measured error, for all backbones then each: timed T=0 turns decoded by both the engine
    and replay (`taps.aggregate.replay_turns`) and their distinct prompts, turns whose records differed, the
    engine - replay tau [95% CI over prompts] (`replay_error`), and the reference turns not the target's one-pass argmax (from E)."""
    greedy = E[E["temperature"] == 0]
    of = lambda df, backbone: df if backbone is None or df.empty else df[df["backbone"] == backbone]  # noqa: E731
    rows = []
    for backbone in [None, *sorted({*(replay["backbone"] if len(replay) else []), *greedy["backbone"]})]:
        err = replay_error(of(replay, backbone), seed)
        rows.append({"backbone": backbone or "all", "timed turns": err["turns"], "prompts": err["prompts"],
                     "records differ": err["differing"],
                     "engine - replay tau": f"{err['diff']:+.3f} [{err['low']:+.3f}, {err['high']:+.3f}]",
                     "reference mismatches": _reference_mismatches(of(greedy, backbone))})
    return pd.DataFrame(rows)


def _text(value) -> str:
    return "" if not isinstance(value, str) and pd.isna(value) else str(value)


def _right_aligned(df: pd.DataFrame) -> list[bool]:
    """Per column: True when every non-blank cell reads as a number (those columns align right)."""
    number = re.compile(r"^[-+]?\d")
    return [all(number.match(t) for t in map(_text, df[c]) if t) and any(map(_text, df[c])) for c in df.columns]


def to_markdown(df: pd.DataFrame, caption: str = "") -> str:
    """A GitHub Markdown table, the caption on a line above it; '|' inside cells is escaped."""
    def line(values) -> str:
        return "| " + " | ".join(_text(v).replace("|", r"\|") for v in values) + " |"
    rule = "|" + "|".join("---:" if right else "---" for right in _right_aligned(df)) + "|"
    head = [caption, ""] if caption else []
    return "\n".join([*head, line(df.columns), rule, *(line(row) for row in df.itertuples(index=False))]) + "\n"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text) -> str:
    """Text safe inside a LaTeX tabular (a leading '[' is braced so '\\\\' cannot read it as an option)."""
    out = "".join(_LATEX.get(c, c) for c in _text(text))
    return "{[}" + out[1:] if out.startswith("[") else out


def to_latex(df: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs tabular inside a table environment with \\caption (and \\label if given)."""
    def line(values) -> str:
        return " & ".join(latex_escape(v) for v in values) + r" \\"
    spec = "".join("r" if right else "l" for right in _right_aligned(df))
    return "\n".join([r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
                      *([rf"\label{{{label}}}"] if label else []), rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
                      line(df.columns), r"\midrule", *(line(row) for row in df.itertuples(index=False)),
                      r"\bottomrule", r"\end{tabular}", r"\end{table}"]) + "\n"


def interpolation_table(distances: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """Per (target, backbone, interpolation line): the ends' distance apart, each end's distance from its
    initialisation, the two initialisations' distance (`taps.average.line_distances`; root-mean-square per
    parameter), mean tau at T=0 at each alpha [95% CI] (`taps.figures.interpolation_points`), and the validation
    loss at each alpha on the ends' held-out data, where measured (`taps.validation.line_losses`)."""
    rows = []
    for r in distances.to_dict("records"):
        line = points[(points.target == r["target"]) & (points.backbone == r["backbone"]) & (points.pair == r["pair"])]
        taus = {f"tau at {a:g}": fmt_ci(p.tau, p.low, p.high) for a, p in zip(line.alpha, line.itertuples())}
        losses = {k: f"{v:.3f}" for k, v in r.items() if k.startswith("val loss at ") and pd.notna(v)}
        rows.append({"target": r["target"], "backbone": r["backbone"], "line": r["pair"], "first": r["first"],
                     "second": r["second"], "apart": f"{r['between']:.4f}", "first from init": f"{r['first_from_init']:.4f}",
                     "second from init": f"{r['second_from_init']:.4f}", "inits apart": f"{r['inits_apart']:.4f}",
                     **taus, **losses})
    return pd.DataFrame(rows)


def write_table(df: pd.DataFrame, stem: str | os.PathLike, caption: str,
                numbers: pd.DataFrame | None = None) -> list[Path]:
    """Write stem.md, stem.tex and stem.csv (the CSV holds `numbers` when given, e.g. `main_numbers`,
    else `df`), each atomically (a temporary file, then os.replace); returns the three paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    texts = {".md": to_markdown(df, caption), ".tex": to_latex(df, caption, label=f"tab:{stem.name}"),
             ".csv": (df if numbers is None else numbers).to_csv(index=False)}
    paths = []
    for suffix, text in texts.items():
        path = stem.with_name(stem.name + suffix)  # not with_suffix: a stem may contain dots
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        paths.append(path)
    return paths
