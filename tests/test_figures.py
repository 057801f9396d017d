"""Figures: the routing-oracle and depth numbers checked exactly on hand-made frames, every figure's
shape (panels, bars, error bars, points), notes instead of crashes on missing pieces, and saving."""

import math

import pandas as pd
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

from taps.aggregate import temperature_pairs
from taps.figures import (confidence_entropy_figure, depth_figure, depth_rates, interpolation_figure,
                          interpolation_points, routing_oracle, routing_oracle_figure, save_figure, tau_figure,
                          temperature_figure)

TARGET = "llama-3.1-8b"


def evaluations(temperatures=(0.0,)) -> pd.DataFrame:
    """3 compositions x 3 benchmarks (listed out of the paper's order) x 2 backbones."""
    rows = []
    for t in temperatures:
        for backbone in ("eagle2", "hass"):
            for i, comp in enumerate(("math", "chat", "merged-paper")):
                for j, bench in enumerate(("svamp", "mt_bench", "gsm8k")):
                    tau = 3.0 + i + 0.1 * j - t
                    rows.append({"target": TARGET, "backbone": backbone, "composition": comp, "benchmark": bench,
                                 "temperature": t, "tau": tau, "tau_low": tau - 0.2, "tau_high": tau + 0.3})
    return pd.DataFrame(rows)


def cycle(bench, acc, conf, ent, drafters="math|chat"):
    return {"target": TARGET, "backbone": "eagle2", "composition": "route-confidence", "benchmark": bench,
            "temperature": 0.0, "prompt": "p", "cycle": 0, "drafters": drafters, "chosen": 0,
            "accepted_0": acc[0], "accepted_1": acc[1], "confidence_0": conf[0], "confidence_1": conf[1],
            "entropy_0": ent[0], "entropy_1": ent[1]}


ROUTING = pd.DataFrame([
    cycle("gsm8k", (3, 1), (0.9, 0.5), (2.0, 1.0)),  # longer 0: confidence right, entropy wrong
    cycle("gsm8k", (0, 2), (0.2, 0.6), (1.0, 2.0)),  # longer 1: confidence right, entropy wrong
    cycle("gsm8k", (1, 4), (0.5, 0.5), (1.5, 1.5)),  # longer 1: both tie -> 0, both wrong
    cycle("gsm8k", (2, 0), (0.7, 0.3), (0.5, 1.0)),  # longer 0: both right
    cycle("gsm8k", (2, 2), (0.1, 0.9), (3.0, 0.1)),  # not decisive: ignored
    cycle("gsm8k", (0, 0), (0.9, 0.1), (0.1, 3.0)),  # not decisive: ignored
    cycle("mt_bench", (0, 3), (0.4, 0.8), (1.0, 0.5)),  # longer 1 (chat): everything right
    cycle("svamp", (1, 1), (0.4, 0.8), (1.0, 0.5)),  # no decisive cycle at all
])


def depth_frame() -> pd.DataFrame:
    rows = []
    for comp, names in (("math", ["math"]), ("chat", ["chat"]), ("route-confidence", ["math", "chat"])):
        for bench in ("gsm8k", "mt_bench"):
            for prompt, scale in (("a", 1), ("b", 2)):
                for k, name in enumerate(names):
                    for depth in (1, 2, 3):
                        rows.append({"target": TARGET, "backbone": "eagle2", "composition": comp, "benchmark": bench,
                                     "temperature": 0.0, "prompt": prompt, "drafter": k, "drafter_name": name,
                                     "depth": depth, "reached": scale * (10 - 3 * depth) if depth < 3 else 0,
                                     "passed": scale * (4 - depth) if depth < 3 else 0})
    return pd.DataFrame(rows)


def note(fig: Figure) -> str:
    return " ".join(t.get_text() for t in fig.texts)


def bars(ax):
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def test_routing_oracle_counts_only_decisive_cycles_and_breaks_ties_to_drafter_0():
    got = routing_oracle(ROUTING).set_index(["benchmark", "signal"])
    assert got.loc[("gsm8k", "confidence"), "cycles"] == 4 and got.loc[("gsm8k", "confidence"), "agree"] == 0.75
    assert got.loc[("gsm8k", "entropy"), "cycles"] == 4 and got.loc[("gsm8k", "entropy"), "agree"] == 0.25
    # one prompt: its cycles are resampled together, so the CI has nothing to vary and sits on the point
    assert got.loc[("gsm8k", "confidence"), ["low", "high"]].tolist() == [0.75, 0.75]
    two = ROUTING.assign(prompt=["p", "q"] * (len(ROUTING) // 2) + ["p"] * (len(ROUTING) % 2))
    low, high = routing_oracle(two).set_index(["benchmark", "signal"]).loc[("gsm8k", "confidence"), ["low", "high"]]
    assert (low, high) == (0.5, 1.0)  # p: 1 of 2 decisive cycles agree, q: 2 of 2
    # always the matched drafter: math (index 0) on GSM8K wins 2 of 4; chat (index 1) on MT-Bench 1 of 1
    assert got.loc[("gsm8k", "matched"), "agree"] == 0.5
    assert got.loc[("mt_bench", "matched"), ["cycles", "agree"]].tolist() == [1, 1.0]
    assert got.loc[("mt_bench", "entropy"), "agree"] == 1.0
    assert got.loc[("svamp", "confidence"), "cycles"] == 0 and math.isnan(got.loc[("svamp", "confidence"), "agree"])
    assert ("svamp", "matched") not in got.index  # no decisive cycle: no reference to draw


def test_routing_oracle_reads_one_routed_run_not_both():
    both = pd.concat([ROUTING.assign(composition="route-confidence"), ROUTING.assign(composition="route-entropy")])
    got = routing_oracle(both).set_index(["benchmark", "signal"])
    assert got.loc[("gsm8k", "confidence"), "cycles"] == 4  # the same contexts are not counted twice


def test_routing_oracle_without_drafter_names_has_only_the_two_signals():
    got = routing_oracle(ROUTING.drop(columns="drafters"))
    assert sorted(got.signal.unique()) == ["confidence", "entropy"]
    assert list(routing_oracle(ROUTING.iloc[:0]).columns) == list(got.columns)


def test_depth_rates_sum_counts_over_prompts_before_dividing():
    got = depth_rates(depth_frame()).set_index(["composition", "benchmark", "drafter_name", "depth"])
    row = got.loc[("math", "gsm8k", "math", 1)]
    assert (row.reached, row.passed, row.rate) == (21, 9, 9 / 21)  # (7 + 14) reached, (3 + 6) passed
    assert got.loc[("route-confidence", "gsm8k", "chat", 2), "rate"] == 6 / 12  # (2 + 4) / (4 + 8)
    assert got.loc[("chat", "mt_bench", "chat", 3), "reached"] == 0
    assert math.isnan(got.loc[("chat", "mt_bench", "chat", 3), "rate"])
    assert len(got) == 2 * 2 * 3 + 2 * 2 * 3  # singles: 2 comps x 2 benches x 3 depths; routed: 2 drafters x 2 x 3


def test_tau_figure_one_bar_group_per_composition_with_ci_per_backbone_panel():
    E = evaluations(temperatures=(0.0, 1.0))
    fig = tau_figure(E)
    panels = [ax for ax in fig.axes if ax.get_ylabel()]
    assert len(panels) == 2
    for ax in panels:
        containers = bars(ax)
        assert [c.get_label() for c in containers] == ["math", "chat", "merged-paper"]
        assert all(c.errorbar is not None for c in containers)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["MT-Bench", "GSM8K", "SVAMP"]
        assert ax.get_ylabel() == "acceptance length τ"
        # T=0 heights of "math" in display order: mt_bench (j=1), gsm8k (j=2), svamp (j=0)
        assert [p.get_height() for p in containers[0]] == pytest.approx([3.1, 3.2, 3.0])
    assert sum(isinstance(c, ErrorbarContainer) for c in panels[0].containers) == 3


def test_tau_figure_leaves_a_gap_for_a_missing_evaluation():
    E = evaluations()
    E = E[~((E.composition == "chat") & (E.benchmark == "gsm8k"))]
    heights = [p.get_height() for p in bars(tau_figure(E).axes[0])[1]]
    assert heights[0] == pytest.approx(4.1) and math.isnan(heights[1])


def test_confidence_entropy_figure_has_two_panels_with_counts_in_legend():
    N = pd.DataFrame({"confidence": [0.9, 0.8, 0.7, 0.2, 0.1], "entropy": [0.1, 0.3, 0.2, 2.0, 2.5],
                      "accepted": [True, True, True, False, False], "depth": [1, 1, 2, 2, 3]})
    fig = confidence_entropy_figure(N)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["accepted (n=3)", "rejected (n=2)"]
    only_accepted = confidence_entropy_figure(N[N.accepted])
    assert [t.get_text() for t in only_accepted.axes[1].get_legend().get_texts()][1] == "rejected (n=0)"


def test_routing_oracle_figure_bars_per_signal_and_matched_reference():
    fig = routing_oracle_figure(ROUTING)
    (ax,) = fig.axes
    containers = bars(ax)
    assert [c.get_label() for c in containers] == ["confidence routing", "entropy routing"]
    assert [p.get_height() for p in containers[0]][:2] == pytest.approx([1.0, 0.75])  # MT-Bench, GSM8K
    assert "always the matched drafter" in ax.get_legend_handles_labels()[1]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["MT-Bench\nn=1", "GSM8K\nn=4", "SVAMP\nn=0"]


def test_depth_figure_draws_single_drafter_compositions_per_benchmark():
    fig = depth_figure(depth_frame())
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert [line.get_label() for line in ax.get_lines()] == ["math", "chat"]
    assert list(fig.axes[1].get_lines()[0].get_ydata())[:2] == pytest.approx([9 / 21, 6 / 12])  # GSM8K
    assert "no single-drafter" in note(depth_figure(depth_frame(), temperature=1.0))


def prompt_frame(temperatures=(0.0, 1.0)) -> pd.DataFrame:
    """Per-prompt counts: 3 compositions x 3 benchmarks x 2 backbones; 4 prompts at T=0, the first 2 at T > 0."""
    rows = []
    for t in temperatures:
        for backbone in ("eagle2", "hass"):
            for i, comp in enumerate(("math", "chat", "merged-paper")):
                for j, bench in enumerate(("svamp", "mt_bench", "gsm8k")):
                    for k in range(4 if t == 0 else 2):
                        rows.append({"target": TARGET, "backbone": backbone, "composition": comp, "benchmark": bench,
                                     "temperature": t, "prompt": f"p{k}", "new_tokens": 60 + 10 * k - 20 * t,
                                     "passes": 20})
    return pd.DataFrame(rows)


def test_temperature_pairs_compare_the_same_prompts():
    T = temperature_pairs(prompt_frame())
    assert len(T) == 18 and set(T.prompts) == {2}
    row = T.iloc[0]
    assert (row.tau_cold, row.tau_hot) == pytest.approx((65 / 20, 45 / 20))  # p0, p1 only at T=0 too
    assert row["diff"] == pytest.approx(-1.0) and row.diff_low == pytest.approx(-1.0)  # every prompt loses 20
    assert temperature_pairs(prompt_frame((0.0,))).empty


def test_temperature_figure_one_point_per_pair_or_a_note():
    fig = temperature_figure(temperature_pairs(prompt_frame()))
    assert len(fig.axes) == 2
    assert all(sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == 9 for ax in fig.axes)
    assert fig.axes[0].get_xlabel() == "τ at T=0" and fig.axes[0].get_ylabel() == "τ at T=1"
    assert "2 paired prompts" in fig.axes[0].get_title()
    assert note(temperature_figure(temperature_pairs(prompt_frame((0.0,))))) == \
        "no composition evaluated at two temperatures"


def test_interpolation_points_average_the_benchmarks_taus_along_each_line():
    P = prompt_frame()
    P.loc[(P.composition == "chat") & (P.benchmark == "gsm8k"), "new_tokens"] += 30  # chat: 1.5 more on GSM8K
    lines = {"shared": {"0": "math", "0.5": "chat", "1": "merged-paper"}, "ghost": {"0": "math", "1": "absent"}}
    points = interpolation_points(P, lines)
    eagle = points[points.backbone == "eagle2"].set_index(["pair", "alpha"])
    assert list(eagle.index) == [("shared", 0.0), ("shared", 0.5), ("shared", 1.0)]  # ghost: not every point ran
    assert eagle.loc[("shared", 0.0), "tau"] == pytest.approx(75 / 20)  # T=0 only: prompts p0..p3, 60..90 tokens
    assert eagle.loc[("shared", 0.5), "tau"] == pytest.approx(75 / 20 + 1.5 / 3)
    assert (eagle.low <= eagle.tau).all() and (eagle.tau <= eagle.high).all() and set(eagle.benchmarks) == {3}
    fig = interpolation_figure(points)
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel().startswith("α")
    assert sum(isinstance(c, ErrorbarContainer) for c in fig.axes[0].containers) == 1  # one per complete line
    assert note(interpolation_figure(interpolation_points(P, {}))) == "no interpolation evaluated (config interpolations)"


@pytest.mark.parametrize("draw", [tau_figure, confidence_entropy_figure, routing_oracle_figure, depth_figure,
                                  temperature_figure, lambda frame: interpolation_figure(
                                      interpolation_points(frame, {"x": {0: "math"}}))])
def test_every_figure_gives_a_note_for_missing_or_empty_frames(draw):
    for frame in (None, pd.DataFrame(), pd.DataFrame({"target": ["x"]})):
        fig = draw(frame)
        assert isinstance(fig, Figure) and not fig.axes and note(fig).startswith("no ")


def test_save_figure_writes_png_and_pdf_atomically(tmp_path):
    stem = tmp_path / "figures" / "sub" / "tau.t0"
    paths = save_figure(tau_figure(evaluations()), stem)
    assert [p.name for p in paths] == ["tau.t0.png", "tau.t0.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:4] == b"%PDF"
    assert all(p.stat().st_size > 1000 for p in paths)
    assert sorted(p.name for p in stem.parent.iterdir()) == ["tau.t0.pdf", "tau.t0.png"]  # no temporary left
