"""Figures from saved result frames only: tau, node confidence/entropy, routing against an oracle,
acceptance by depth, the temperature effect.

Each function takes frames `taps.aggregate` wrote (E, N, R, D) and returns a `Figure` built
without pyplot (no global state); a missing or empty piece gives a figure with a note instead of
an error. The numbers behind the routing and depth figures are pure functions tests check exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from taps.benchmarks import DOMAINS, column_order, display_name
from taps.metrics import benchmark_mean_tau, bootstrap_ci

MARKERS = {"mt_bench": "o", "gsm8k": "s", "math500": "^", "svamp": "D"}
PANEL = ["target", "backbone"]  # one panel per (target, backbone)
TAU_COLS = PANEL + ["composition", "benchmark", "temperature", "tau", "tau_low", "tau_high"]
ORACLE_COLS = ["target", "backbone", "benchmark", "signal", "cycles", "agree", "low", "high"]
DEPTH_KEYS = ["target", "backbone", "composition", "benchmark", "temperature", "drafter_name", "depth"]


def _lacks(frame: pd.DataFrame | None, cols) -> bool:
    return frame is None or frame.empty or not set(cols) <= set(frame.columns)


def _note(text: str) -> Figure:
    fig = Figure(figsize=(5, 2.5))
    fig.text(0.5, 0.5, text, ha="center", va="center")
    return fig


def _grid(nrows: int, ncols: int, width: float = 4.5, height: float = 3.4):
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _colors(names) -> dict:
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


# besides colour, so that every series stays apart in greyscale print: a hatch per bar series, a marker
# and a line style per line series (the n-th name of a figure gets the n-th of each)
HATCHES = ("", "//", "..", "xx", "\\\\", "++", "oo", "--", "||", "**")
LINE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
LINE_STYLES = ("-", "--", ":", "-.")
FILLS = ("full", "none", "left", "top", "right", "bottom")  # marker fill styles, for point series


def _hatches(names) -> dict:
    return {name: HATCHES[i % len(HATCHES)] for i, name in enumerate(names)}


def _line_styles(names) -> dict:
    """name -> {color, marker, linestyle}: no two of the first 10 names share a marker, nor 40 all three."""
    colors = _colors(names)
    return {name: {"color": colors[name], "marker": LINE_MARKERS[i % len(LINE_MARKERS)],
                   "linestyle": LINE_STYLES[(i // len(LINE_MARKERS) + i) % len(LINE_STYLES)]}
            for i, name in enumerate(names)}


def _title(key, frame: pd.DataFrame) -> str:
    target, backbone = key
    return f"{target} · {backbone}" if frame.target.nunique() > 1 else backbone


def _span(counts: pd.Series) -> str:
    """'10', or '8-10' when counts differ."""
    lo, hi = int(counts.min()), int(counts.max())
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def _err(rows: pd.DataFrame, mid: str, low: str, high: str) -> np.ndarray:
    # [2, n] distances below/above the estimate, as errorbar wants them
    return np.vstack([rows[mid] - rows[low], rows[high] - rows[mid]]).clip(min=0)


def _legend(fig: Figure, axes, handles: dict | None = None) -> None:
    """One legend under the panels: the given {label: handle}, else every labelled artist once."""
    handles = handles or {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:  # about one legend column per 2 inches of figure, so a one-panel legend is not cut
        ncols = max(1, min(len(handles), round(fig.get_figwidth() / 2)))
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=ncols)


def tau_figure(E: pd.DataFrame, temperature: float = 0.0) -> Figure:
    """tau per benchmark, one bar per composition (E's order) with its 95% CI; one panel (row) per backbone."""
    if _lacks(E, TAU_COLS):
        return _note("no evaluations")
    E = E[np.isclose(E.temperature.astype(float), temperature)]
    if E.empty:
        return _note(f"no evaluations at T={temperature:g}")
    comps = list(dict.fromkeys(E.composition))
    colors, hatches, panels = _colors(comps), _hatches(comps), list(E.groupby(PANEL, sort=False))
    fig, axes = _grid(len(panels), 1, width=min(14.0, max(4.5, 0.3 * len(comps) * E.benchmark.nunique())))
    for ax, (key, frame) in zip(axes[:, 0], panels):
        benches = column_order(frame.benchmark)
        present = [c for c in comps if c in set(frame.composition)]
        width = 0.8 / len(present)
        for i, comp in enumerate(present):
            rows = frame[frame.composition == comp].set_index("benchmark").reindex(benches)
            x = np.arange(len(benches)) - 0.4 + width * (i + 0.5)
            ax.bar(x, rows.tau.to_numpy(float), width, yerr=_err(rows, "tau", "tau_low", "tau_high"),
                   color=colors[comp], hatch=hatches[comp], edgecolor="white", linewidth=0, label=comp,
                   capsize=2, error_kw={"elinewidth": 0.8})
        ax.set_xticks(range(len(benches)), [display_name(b) for b in benches])
        ax.set(ylabel="acceptance length τ", title=f"{_title(key, E)}, T={temperature:g}")
    _legend(fig, axes)
    return fig


def confidence_entropy_figure(N: pd.DataFrame) -> Figure:
    """Density of path confidence and entropy for accepted vs rejected drafted nodes (N pooled)."""
    if _lacks(N, ["confidence", "entropy", "accepted"]):
        return _note("no drafted-node sample")
    fig, axes = _grid(1, 2)
    accepted = N.accepted.astype(bool)
    for ax, col, xlabel in zip(axes[0], ["confidence", "entropy"], ["path confidence", "entropy (nats)"]):
        values = N[col].astype(float)
        bins = np.linspace(0, 1, 26) if col == "confidence" else np.histogram_bin_edges(values.dropna(), 25)
        for mask, name, color, hatch, ls in ((accepted, "accepted", "tab:green", "", "-"),
                                             (~accepted, "rejected", "tab:red", "//", "--")):
            part = values[mask].dropna()
            ax.hist(part, bins=bins, density=len(part) > 0, histtype="stepfilled", alpha=0.45, color=color,
                    edgecolor=color, hatch=hatch, linestyle=ls, label=f"{name} (n={len(part):,})")
        ax.set(xlabel=xlabel, ylabel="density")
        ax.legend()
    return fig


def routing_oracle(R: pd.DataFrame, run: str = "route-confidence") -> pd.DataFrame:
    """How often each routing signal keeps the tree the target would accept longer, per (target, backbone,
    benchmark), on the cycles of one routed run (`run` where R has it, else its first composition) at the lowest
    temperature R holds, where replay scored both drafters' trees on the same contexts. Only decisive cycles (accepted_0 != accepted_1)
    count; agree = share where the signal picked the longer tree, [low, high] its 95% bootstrap CI over
    prompts (a prompt's cycles resampled together). Signal 'matched' (always the benchmark's domain
    drafter) is added when R names the drafters."""
    need = PANEL + ["benchmark", "confidence_0", "confidence_1", "entropy_0", "entropy_1", "accepted_0", "accepted_1"]
    if _lacks(R, need):
        return pd.DataFrame(columns=ORACLE_COLS)
    if "composition" in R:
        R = R[R.composition == (run if run in set(R.composition) else R.composition.iloc[0])]
    if "temperature" in R:
        R = R[R.temperature == R.temperature.min()]
    prompts = R["prompt"] if "prompt" in R else pd.Series(0, index=R.index)
    rows = []
    for (target, backbone, benchmark), group in R.groupby(PANEL + ["benchmark"], sort=False):
        decisive = group[group.accepted_0 != group.accepted_1]
        longer = (decisive.accepted_1 > decisive.accepted_0).astype(float)
        # the tree (0/1) each signal keeps; ties -> 0; 'matched' is NaN where no drafter fits the domain
        picks = {"confidence": (decisive.confidence_1 > decisive.confidence_0).astype(float),
                 "entropy": (decisive.entropy_1 < decisive.entropy_0).astype(float)}
        if "drafters" in decisive:
            names, domain = decisive.drafters.astype(str).str.split("|"), DOMAINS.get(benchmark)
            picks["matched"] = names.map(lambda n: float(n.index(domain)) if domain in n else float("nan"))
        for signal, pick in picks.items():
            valid = pick.notna()
            n, k = int(valid.sum()), int((pick[valid] == longer[valid]).sum())
            if signal == "matched" and n == 0:
                continue
            low = high = float("nan")
            if n:
                per_prompt = (pick[valid] == longer[valid]).groupby(prompts[decisive.index][valid]).agg(["sum", "size"])
                _, low, high = bootstrap_ci(per_prompt["sum"].tolist(), per_prompt["size"].tolist())
            rows.append({"target": target, "backbone": backbone, "benchmark": benchmark, "signal": signal,
                         "cycles": n, "agree": k / n if n else float("nan"), "low": low, "high": high})
    return pd.DataFrame(rows, columns=ORACLE_COLS)


def routing_oracle_figure(R: pd.DataFrame) -> Figure:
    """Bars: share of decisive cycles where confidence / entropy routing kept the longer tree."""
    oracle = routing_oracle(R)
    if oracle.empty:
        return _note("no routing cycles")
    panels = list(oracle.groupby(PANEL, sort=False))
    fig, axes = _grid(1, len(panels))
    for ax, (key, frame) in zip(axes[0], panels):
        benches = column_order(frame.benchmark)
        x = np.arange(len(benches))
        for i, (signal, color, hatch) in enumerate((("confidence", "tab:blue", ""), ("entropy", "tab:orange", "//"))):
            rows = frame[frame.signal == signal].set_index("benchmark").reindex(benches)
            ax.bar(x + (i - 0.5) * 0.38, rows.agree.to_numpy(float), 0.38, yerr=_err(rows, "agree", "low", "high"),
                   color=color, hatch=hatch, edgecolor="white", linewidth=0, label=f"{signal} routing", capsize=2)
        matched = frame[frame.signal == "matched"].set_index("benchmark").reindex(benches).agree
        if matched.notna().any():
            ax.hlines(matched.to_numpy(float), x - 0.4, x + 0.4, colors="black", linestyles="--",
                      label="always the matched drafter")
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        cycles = frame[frame.signal == "confidence"].set_index("benchmark").cycles.reindex(benches)
        ax.set_xticks(x, [f"{display_name(b)}\nn={c:g}" for b, c in zip(benches, cycles)])
        ax.set(ylim=(0, 1.05), ylabel="picks the longer tree", title=_title(key, oracle))
    _legend(fig, axes)
    return fig


def depth_rates(D: pd.DataFrame) -> pd.DataFrame:
    """Conditional acceptance rate per speculative step: cycles passing step k / cycles reaching it, summed
    over prompts, per DEPTH_KEYS (single drafters; rate NaN when no cycle reached the step)."""
    if _lacks(D, DEPTH_KEYS + ["reached", "passed"]):
        return pd.DataFrame(columns=DEPTH_KEYS + ["reached", "passed", "rate"])
    out = D.dropna(subset=["reached", "passed"]).groupby(DEPTH_KEYS, sort=True)[["reached", "passed"]].sum()
    out = out.reset_index()
    out["rate"] = out.passed / out.reached.where(out.reached > 0)
    return out


def depth_figure(D: pd.DataFrame, temperature: float = 0.0) -> Figure:
    """Acceptance rate by speculative depth, one line per single-drafter composition (two compositions of
    one drafter, e.g. at two tree sizes, are two lines), one panel per benchmark, a row per (target,
    backbone). Compositions with two drafters (routed, merged) are left out: their per-drafter rates are
    not one decoder's."""
    rates = depth_rates(D)
    rates = rates[np.isclose(rates.temperature.astype(float), temperature)]
    rates = rates[rates.groupby(PANEL + ["composition"]).drafter_name.transform("nunique") == 1]
    if rates.empty:
        return _note(f"no single-drafter depth counts at T={temperature:g}")
    order = {c: i for i, c in enumerate(dict.fromkeys(D.composition))}  # D's composition order
    rates = rates.sort_values(["composition", "depth"], key=lambda s: s.map(order) if s.name == "composition" else s)
    styles, benches = _line_styles(list(dict.fromkeys(rates.composition))), column_order(rates.benchmark)
    panels = list(rates.groupby(PANEL, sort=False))
    fig, axes = _grid(len(panels), len(benches), width=3.6, height=3.0)
    for row, (key, frame) in zip(axes, panels):
        for ax, bench in zip(row, benches):
            for name, line in frame[frame.benchmark == bench].groupby("composition", sort=False):
                ax.plot(line.depth, line.rate, label=name, **styles[name])
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set(ylim=(0, 1.05), xlabel="speculative depth", ylabel="acceptance rate",
                   title=f"{_title(key, rates)} · {display_name(bench)}")
    _legend(fig, axes)
    return fig


def temperature_figure(T: pd.DataFrame) -> Figure:
    """tau at the lowest vs the highest temperature on the same prompts (`taps.aggregate.temperature_pairs`),
    one point per composition x benchmark evaluated at both, with 95% CIs both ways; below the diagonal,
    sampling costs tau."""
    cols = PANEL + ["composition", "benchmark", "cold", "hot", "tau_cold", "tau_hot"]
    if _lacks(T, cols):
        return _note("no composition evaluated at two temperatures")
    cold, hot = T.cold.iloc[0], T.hot.iloc[0]
    comps = list(dict.fromkeys(T.composition))
    colors, panels = _colors(comps), list(T.groupby(PANEL, sort=False))
    fills = {c: FILLS[i % len(FILLS)] for i, c in enumerate(comps)}  # apart in greyscale too
    fig, axes = _grid(1, len(panels), width=4.8, height=4.4)
    for ax, (key, frame) in zip(axes[0], panels):
        xerr = _err(frame, "tau_cold", "tau_low_cold", "tau_high_cold")
        yerr = _err(frame, "tau_hot", "tau_low_hot", "tau_high_hot")
        for i, p in enumerate(frame.itertuples()):
            ax.errorbar(p.tau_cold, p.tau_hot, xerr=xerr[:, i:i + 1], yerr=yerr[:, i:i + 1], capsize=2,
                        fmt=MARKERS.get(p.benchmark, "v"), color=colors[p.composition], elinewidth=0.8,
                        fillstyle=fills[p.composition], markersize=7)
        lims = [min(frame.tau_low_cold.min(), frame.tau_low_hot.min()) * 0.95,
                max(frame.tau_high_cold.max(), frame.tau_high_hot.max()) * 1.05]
        ax.plot(lims, lims, ls="--", color="grey", lw=0.8)
        ax.set(xlabel=f"τ at T={cold:g}", ylabel=f"τ at T={hot:g}",
               title=f"{_title(key, T)}, {_span(frame.prompts)} paired prompts")
    handles = {c: Line2D([], [], color=colors[c], marker="o", ls="", fillstyle=fills[c], markersize=7) for c in comps}
    handles |= {display_name(b): Line2D([], [], color="black", marker=MARKERS.get(b, "v"), ls="")
                for b in column_order(T.benchmark)}
    _legend(fig, axes, handles)
    return fig


def interpolation_points(P: pd.DataFrame, lines: dict[str, dict[float, str]], seed: int = 0) -> pd.DataFrame:
    """Mean tau over the benchmarks at T=0 along each interpolation line (pair -> {alpha: composition}), per (target,
    backbone): one row per point with its 95% bootstrap CI over prompts (resampled within each benchmark). A
    line is left out of a panel where one of its compositions did not run on every benchmark of it."""
    cols = PANEL + ["pair", "alpha", "composition", "tau", "low", "high", "benchmarks"]
    if _lacks(P, PANEL + ["composition", "benchmark", "temperature", "new_tokens", "passes"]) or not lines:
        return pd.DataFrame(columns=cols)
    P, rows = P[P.temperature.astype(float) == 0.0], []
    for key, panel in P.groupby(PANEL, sort=False):
        benches = list(dict.fromkeys(panel.benchmark))
        for pair, line in lines.items():
            points = sorted((float(a), n) for a, n in line.items())
            if any(set(panel.benchmark[panel.composition == name]) != set(benches) for _, name in points):
                continue
            for alpha, name in points:
                tau, low, high = benchmark_mean_tau(panel[panel.composition == name], seed)
                rows.append({**dict(zip(PANEL, key)), "pair": pair, "alpha": alpha, "composition": name, "tau": tau,
                             "low": low, "high": high, "benchmarks": len(benches)})
    return pd.DataFrame(rows, columns=cols)


def interpolation_figure(points: pd.DataFrame) -> Figure:
    """Mean tau at T=0 along each interpolation line theta(alpha) = (1 - alpha) first + alpha second
    (`interpolation_points`), with 95% CIs: a line that sags in the middle is a loss barrier between the two."""
    if points.empty:
        return _note("no interpolation evaluated (config interpolations)")
    pairs = list(dict.fromkeys(points.pair))
    colors, panels = _colors(pairs), list(points.groupby(PANEL, sort=False))
    fig, axes = _grid(1, len(panels), width=4.8)
    for ax, (key, frame) in zip(axes[0], panels):
        for i, (pair, line) in enumerate(frame.groupby("pair", sort=False)):
            line = line.sort_values("alpha")
            ends = f"{line.composition.iloc[0]} → {line.composition.iloc[-1]}"
            ax.errorbar(line.alpha + (i - 1) * 0.01, line.tau, yerr=_err(line, "tau", "low", "high"), capsize=2,
                        marker=("o", "s", "^", "D")[i % 4], color=colors[pair], label=f"{pair} ({ends})")
        ax.set(xlabel="α (weight of the second drafter)", ylabel="mean τ over the benchmarks, T=0",
               title=_title(key, points))
        ax.xaxis.set_major_locator(MaxNLocator(5))
    _legend(fig, axes)
    return fig


def save_figure(fig: Figure, stem: str | os.PathLike) -> list[Path]:
    """Write stem.png (dpi 150) and stem.pdf, each through a temporary file and os.replace, then close."""
    stem, paths = Path(stem), []
    stem.parent.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "pdf"):
        path = stem.with_name(f"{stem.name}.{ext}")
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            fig.savefig(tmp, format=ext, dpi=150)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        paths.append(path)
    if fig.canvas.manager is not None:  # made through pyplot: drop it from pyplot's registry too
        import matplotlib.pyplot as plt
        plt.close(fig)
    fig.clear()
    return paths
