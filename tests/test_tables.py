"""Tables from a hand-made evaluations frame: exact cells, blanks where data is missing, escaped files."""

import math

import pandas as pd
import pytest

from taps.tables import (ORACLE, composition_table, fmt_ci, latex_escape, main_numbers, main_table, replay_table,
                         routing_table, speed_table, with_oracle, write_table)

NAN = float("nan")
FOUR = ["mt_bench", "gsm8k", "math500", "svamp"]
KINDS = {"math": ("single", "math", None, None), "chat": ("single", "chat", None, None),
         "mixed-160+160": ("single", "mixed-160+160", None, None),
         "route-confidence": ("route-confidence", "math|chat", None, None),
         "merged-paper": ("merged-tree", "math|chat", "paper", True),
         "merged-equal": ("merged-tree", "math|chat", "equal", True)}


def _row(composition, benchmark, tau, low=None, high=None, temperature=0.0, backbone="eagle2", nodes=10.0,
         shares=(NAN, NAN), timed=0, speed=(NAN, NAN), identical=True, replay=(NAN, NAN, NAN), mismatched=0,
         reference=NAN):
    kind, drafters, budget, trie = KINDS[composition]
    return {"target": "tiny", "backbone": backbone, "composition": composition, "kind": kind,
            "drafters": drafters, "budget": budget, "trie": trie, "benchmark": benchmark,
            "temperature": temperature, "prompts": 4, "turns": 4, "tau": tau,
            "tau_low": tau - 0.5 if low is None else low, "tau_high": tau + 0.5 if high is None else high,
            "nodes_per_pass": nodes, "timed_turns": timed, "tokens_per_s": speed[0],
            "vanilla_tokens_per_s": speed[1], "speedup": speed[0] / speed[1] if timed else NAN,
            "identical": identical, "mismatched_turns": mismatched if temperature == 0 else NAN,
            "reference_mismatched_turns": reference, "replay_turns": timed, "replay_diff": replay[0],
            "replay_diff_low": replay[1], "replay_diff_high": replay[2], "share_0": shares[0], "share_1": shares[1]}


@pytest.fixture
def E():
    rows = []
    for temperature in (0.0, 1.0):
        for composition, base in [("math", 3.0), ("chat", 2.0), ("route-confidence", 2.5)]:
            for i, benchmark in enumerate(FOUR):
                if composition == "chat" and temperature == 1.0 and benchmark == "math500":
                    continue  # one benchmark missing for one row
                rows.append(_row(composition, benchmark, base + i / 10, temperature=temperature,
                                 shares=(0.82, 0.18) if composition == "route-confidence" else (NAN, NAN)))
    rows[1] = _row("math", "gsm8k", 3.17, 2.70, 3.64, nodes=8.0,
                   timed=3, speed=(37.0, 20.0), identical=False, replay=(0.03, -0.01, 0.07), mismatched=2)
    for composition, nodes, tau in [("merged-paper", 16.0, 3.4), ("merged-equal", 8.0, 3.2)]:
        rows.append(_row(composition, "gsm8k", tau, nodes=nodes, shares=(0.6, 0.4)))
    rows.append(_row("math", "gsm8k", 4.0, backbone="hass"))
    rows.append(_row("mixed-160+160", "gsm8k", 3.9, nodes=30.0))  # best single tau, but not a merged part
    return pd.DataFrame(rows)


@pytest.fixture
def paper():
    return pd.DataFrame({"backbone": ["eagle2", "eagle2", "eagle2"], "composition": ["math", "math", "chat"],
                         "paper_label": ["x", "x", "y"], "benchmark": ["gsm8k", "average", "gsm8k"],
                         "temperature": [0, 0, 1], "tau": [5.04, 4.42, 3.72], "speedup": [NAN] * 3,
                         "source": ["README"] * 3})


def _cell(table, column, **labels):
    hit = table
    for key, value in labels.items():
        hit = hit[hit[key] == value]
    assert len(hit) == 1, f"{labels} matched {len(hit)} rows"
    return hit[column].iloc[0]


def test_fmt_ci_formats_value_with_interval_and_blanks_missing():
    assert fmt_ci(3.17, 2.7, 3.64) == "3.17 [2.70, 3.64]"
    assert fmt_ci(3.17) == "3.17"
    assert fmt_ci(NAN, 1.0, 2.0) == ""
    assert fmt_ci(0.03, -0.01, 0.07, signed=True) == "+0.03 [-0.01, +0.07]"


def test_main_table_cell_is_tau_with_its_ci(E):
    table = main_table(E)
    assert list(table.columns) == ["target", "backbone", "T", "composition", "MT-Bench", "GSM8K", "MATH-500",
                                   "SVAMP", "Avg."]
    assert _cell(table, "GSM8K", backbone="eagle2", composition="math", T="0") == "3.17 [2.70, 3.64]"
    assert _cell(table, "MT-Bench", backbone="eagle2", composition="chat", T="1") == "2.00 [1.50, 2.50]"


def test_main_table_average_is_mean_of_four_and_blank_when_one_is_missing(E):
    table = main_table(E)
    assert _cell(table, "Avg.", backbone="eagle2", composition="math", T="0") == f"{(3.0 + 3.17 + 3.2 + 3.3) / 4:.2f}"
    assert _cell(table, "MATH-500", backbone="eagle2", composition="chat", T="1") == ""
    assert _cell(table, "Avg.", backbone="eagle2", composition="chat", T="1") == ""
    assert _cell(table, "Avg.", backbone="hass", composition="math", T="0") == ""  # only GSM8K was run
    numbers = main_numbers(E)
    avg = numbers[(numbers.composition == "math") & (numbers.backbone == "eagle2") & (numbers.temperature == 0)
                  & (numbers.benchmark == "average")]
    assert avg.tau.iloc[0] == pytest.approx((3.0 + 3.17 + 3.2 + 3.3) / 4) and math.isnan(avg.tau_low.iloc[0])


def test_the_oracle_row_takes_each_benchmarks_domain_expert(E):
    table = main_table(with_oracle(E, {"math": "math", "chat": "chat"}), order=["math", "chat", ORACLE])
    oracle = dict(backbone="eagle2", composition=ORACLE, T="0")
    assert _cell(table, "MT-Bench", **oracle) == _cell(table, "MT-Bench", backbone="eagle2", composition="chat", T="0")
    assert _cell(table, "GSM8K", **oracle) == "3.17 [2.70, 3.64]"  # the math expert's
    assert _cell(table, "Avg.", **oracle) == f"{(2.0 + 3.17 + 3.2 + 3.3) / 4:.2f}"
    assert _cell(table, "MATH-500", backbone="eagle2", composition=ORACLE, T="1") == "3.20 [2.70, 3.70]"
    assert with_oracle(E, {"math": "nobody"}).equals(E)  # no expert evaluated: nothing derived
    assert ORACLE not in set(composition_table(with_oracle(E, {"math": "math", "chat": "chat"})).composition)


def test_main_table_rows_follow_composition_order_then_temperature(E):
    table = main_table(E)
    eagle = table[table.backbone == "eagle2"]
    assert list(zip(eagle["T"], eagle.composition))[:5] == [
        ("0", "math"), ("0", "chat"), ("0", "route-confidence"), ("0", "merged-paper"), ("0", "merged-equal")]
    assert list(table.backbone.unique()) == ["eagle2", "hass"]
    ordered = main_table(E, order=["chat", "math"])
    assert list(ordered.composition[ordered.backbone == "eagle2"]) == ["chat", "math", "chat", "math"]


def test_paper_line_shows_reported_tau_and_blanks_where_missing(E, paper):
    table = main_table(E, paper=paper)
    assert list(table.columns[:5]) == ["target", "backbone", "T", "composition", "source"]
    math_t0 = table[(table.backbone == "eagle2") & (table.composition == "math") & (table["T"] == "0")]
    assert list(math_t0.source) == ["ours", "paper"]
    reported = math_t0.iloc[1]
    assert (reported["GSM8K"], reported["Avg."], reported["MT-Bench"]) == ("5.04", "4.42", "")
    assert _cell(table, "GSM8K", composition="chat", T="1", source="paper") == "3.72"
    assert _cell(table, "Avg.", composition="chat", T="1", source="paper") == ""
    assert not ((table.composition == "route-confidence") & (table.source == "paper")).any()
    numbers = main_numbers(E, paper)
    hit = numbers[(numbers.composition == "math") & (numbers.benchmark == "gsm8k") & (numbers.temperature == 0)
                  & (numbers.backbone == "eagle2")]
    assert hit.paper_tau.iloc[0] == 5.04 and hit.tau.iloc[0] == 3.17


def test_paper_average_falls_back_to_the_mean_of_its_four_values(E):
    paper = pd.DataFrame({"backbone": "eagle2", "composition": "math", "benchmark": FOUR, "temperature": 1,
                          "tau": [2.0, 3.0, 4.0, 5.0]})
    table = main_table(E, paper=paper)
    assert _cell(table, "Avg.", composition="math", T="1", source="paper") == "3.50"
    assert _cell(table, "SVAMP", composition="math", T="1", source="paper") == "5.00"


def test_extra_benchmark_is_appended_and_missing_ones_are_blank():
    E = pd.DataFrame([_row("math", "gsm8k", 3.0), _row("math", "humaneval", 2.0)])
    table = main_table(E)
    assert list(table.columns[4:]) == ["MT-Bench", "GSM8K", "MATH-500", "SVAMP", "Avg.", "humaneval"]
    assert table.iloc[0]["humaneval"] == "2.00 [1.50, 2.50]" and table.iloc[0]["MT-Bench"] == ""


def test_composition_table_compares_multi_drafter_trees_with_the_best_single(E):
    table = composition_table(E)
    gsm = table[(table.benchmark == "GSM8K") & (table["T"] == "0") & (table.backbone == "eagle2")]
    assert list(gsm.composition) == ["math", "route-confidence", "merged-paper", "merged-equal"]
    assert list(gsm["nodes/pass"]) == ["8.00", "10.00", "16.00", "8.00"]
    assert list(gsm["nodes vs single"]) == ["1.00", "1.25", "2.00", "1.00"]
    assert list(gsm.budget) == ["", "", "paper", "equal"] and list(gsm.trie) == ["", "", "yes", "yes"]
    assert gsm.tau.iloc[0] == "3.17 [2.70, 3.64]"
    # mixed-160+160 has the highest single tau, but is not one of the drafters the trees combine
    assert set(table.composition) == {"math", "route-confidence", "merged-paper", "merged-equal"}
    assert "hass" not in set(table.backbone)  # no multi-drafter composition ran there


def test_routing_table_names_each_drafter_share(E):
    table = routing_table(E)
    assert _cell(table, "GSM8K", composition="route-confidence", T="0") == "math 0.82 / chat 0.18"
    assert _cell(table, "GSM8K", composition="merged-paper", T="0") == "math 0.60 / chat 0.40"
    assert _cell(table, "MT-Bench", composition="merged-paper", T="0") == ""
    assert set(table.composition) == {"route-confidence", "merged-paper", "merged-equal"}


def _timed_prompts(composition="math", temperature=0.0, engine=(40.0, 1.0), vanilla=(40.0, 2.0)):
    """Per-prompt rows of two benchmarks, two prompts each, one prompt per benchmark timed: engine and vanilla
    (tokens, decode seconds) per timed prompt; the untimed prompts carry NaN timing."""
    rows = []
    for bench in ("gsm8k", "mt_bench"):
        for prompt, timed in (("p1", True), ("p2", False)):
            rows.append({"target": "tiny", "backbone": "eagle2", "composition": composition, "benchmark": bench,
                         "temperature": temperature, "prompt": prompt, "new_tokens": 40, "passes": 20,
                         "timed_tokens": engine[0] if timed else NAN, "seconds": engine[1] if timed else NAN,
                         "prefill_seconds": 0.5 if timed else NAN,
                         "vanilla_new_tokens": vanilla[0] if timed else NAN,
                         "vanilla_seconds": vanilla[1] if timed else NAN,
                         "vanilla_prefill_seconds": 0.5 if timed else NAN})
    return pd.DataFrame(rows)


def test_speed_table_pools_timed_prompts_over_benchmarks_with_prefill_apart():
    P = pd.concat([_timed_prompts(), _timed_prompts("chat")])  # chat: no evaluation row timed it
    E = pd.DataFrame([{**_row("math", b, 3.0, timed=1, speed=(40.0, 20.0), identical=b == "gsm8k",
                              mismatched=int(b != "gsm8k")), "prefill_ms": 500.0, "vanilla_prefill_ms": 400.0}
                      for b in ("gsm8k", "mt_bench")])
    table = speed_table(P[P.composition == "math"], E)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["composition"], row["benchmarks"], row["timed prompts"], row["timed turns"]) == ("math", "2", "2", "2")
    assert (row["prefill ms"], row["vanilla prefill ms"]) == ("500", "400")
    assert (row["tokens/s"], row["vanilla tokens/s"]) == ("40.0", "20.0")
    # one timed prompt per benchmark: every replicate draws it, so the CI collapses on the point (2x)
    assert row["speedup"] == "2.00 [2.00, 2.00]x"
    assert row["identical"] == "no" and row["mismatched turns"] == "1"
    assert speed_table(P.assign(seconds=NAN), E).empty  # nothing timed, nothing listed


def test_speed_table_ci_spans_the_prompts_speedups():
    P = pd.concat([_timed_prompts(engine=(40.0, 1.0)), _timed_prompts(engine=(40.0, 4.0)).assign(prompt="p3")])
    E = pd.DataFrame([{**_row("math", b, 3.0, timed=2, speed=(20.0, 20.0)), "prefill_ms": 1.0,
                       "vanilla_prefill_ms": 1.0} for b in ("gsm8k", "mt_bench")])
    value, low, high = (float(x.strip("[],x")) for x in speed_table(P, E).iloc[0]["speedup"].split())
    assert low < value < high and 0.5 <= low and high <= 2.0  # 2x and 0.5x prompts: the pooled ratio between


def test_replay_table_counts_each_reference_turn_unlike_the_targets_argmax_once():
    E = pd.DataFrame([_row("math", "gsm8k", 3.0, reference=2), _row("chat", "gsm8k", 3.0, reference=2),
                      _row("math", "mt_bench", 3.0, reference=0),
                      _row("math", "gsm8k", 3.0, backbone="hass", reference=2),
                      _row("math", "gsm8k", 3.0, temperature=1.0)])
    replay = pd.DataFrame({"backbone": ["eagle2", "eagle2"], "new_tokens": [10, 20], "passes": [5, 10],
                           "replay_new_tokens": [10, 20], "replay_passes": [5, 8], "replay_matches": [True, False]})
    table = replay_table(replay, E).set_index("backbone")
    assert list(table.index) == ["all", "eagle2", "hass"]
    # gsm8k: 2 of its 4 reference turns, whichever composition or backbone replayed them; mt_bench: 0 of 4
    assert table["reference mismatches"].tolist() == ["2 of 8", "2 of 8", "2 of 4"]
    assert table["timed turns"].tolist() == [2, 2, 0] and table["records differ"].tolist() == [1, 1, 0]
    assert replay_table(pd.DataFrame(), E[E.temperature == 1.0])["reference mismatches"].tolist() == [""]


def test_latex_escape_covers_special_characters():
    assert latex_escape("a_b & 5% #1 $x") == r"a\_b \& 5\% \#1 \$x"
    assert latex_escape("[1, 2]") == "{[}1, 2]"


def test_write_table_writes_markdown_latex_and_csv(tmp_path, E):
    df = pd.DataFrame({"composition": ["mixed-160+160", "math|chat"], "tau_mean": ["3.17 [2.70, 3.64]", "2.00"]})
    paths = write_table(df, tmp_path / "new" / "main", "Acceptance length & 95% CI", numbers=main_numbers(E))
    assert [p.name for p in paths] == ["main.md", "main.tex", "main.csv"]
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["main.csv", "main.md", "main.tex"]
    md = paths[0].read_text().splitlines()
    assert md[0] == "Acceptance length & 95% CI" and md[2] == "| composition | tau_mean |"
    assert md[3] == "|---|---:|" and md[5] == r"| math\|chat | 2.00 |"
    tex = paths[1].read_text()
    assert r"\caption{Acceptance length \& 95\% CI}" in tex and r"\label{tab:main}" in tex
    assert r"composition & tau\_mean \\" in tex and r"mixed-160+160 & 3.17 [2.70, 3.64] \\" in tex
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule") < tex.index(r"\end{table}")
    assert r"\begin{tabular}{lr}" in tex
    csv = pd.read_csv(paths[2])
    assert list(csv.columns) == ["target", "backbone", "temperature", "composition", "benchmark", "tau",
                                 "tau_low", "tau_high", "paper_tau"]
    write_table(df, tmp_path / "plain", "c")
    assert pd.read_csv(tmp_path / "plain.csv").composition.tolist() == ["mixed-160+160", "math|chat"]


def test_interpolation_table_gives_the_distances_and_tau_along_each_line():
    from taps.tables import interpolation_table
    distances = pd.DataFrame([{"target": "tiny", "backbone": "eagle2", "pair": "control", "first": "math",
                               "second": "math-s1", "between": 0.01234, "first_from_init": 0.02, "second_from_init": 0.03,
                               "inits_apart": 0.05, "val loss at 0": 1.2, "val loss at 0.5": 2.5, "val loss at 1": 1.25}])
    points = pd.DataFrame({"target": "tiny", "backbone": "eagle2", "pair": "control", "alpha": [0.0, 0.5, 1.0],
                           "composition": ["math", "control@0.5", "math-s1"], "tau": [3.0, 1.5, 2.9],
                           "low": [2.5, 1.2, 2.4], "high": [3.5, 1.8, 3.4], "benchmarks": 4})
    row = interpolation_table(distances, points).iloc[0]
    assert (row["line"], row["apart"], row["inits apart"]) == ("control", "0.0123", "0.0500")
    assert (row["tau at 0"], row["tau at 0.5"], row["tau at 1"]) == ("3.00 [2.50, 3.50]", "1.50 [1.20, 1.80]",
                                                                     "2.90 [2.40, 3.40]")
    assert (row["val loss at 0"], row["val loss at 0.5"], row["val loss at 1"]) == ("1.200", "2.500", "1.250")


def test_headline_table_gives_the_mean_over_the_four_benchmarks_per_temperature_and_backbone(paper):
    from taps.tables import headline_table
    rows = []
    for t in (0.0, 1.0):
        for comp, base in (("math", 3.0), ("chat", 2.0)):
            for j, bench in enumerate(FOUR):
                if comp == "chat" and t == 1.0 and bench == "svamp":
                    continue  # a benchmark missing: no mean there
                rows += [{"target": "tiny", "backbone": "eagle2", "composition": comp, "benchmark": bench,
                          "temperature": t, "prompt": f"p{i}", "new_tokens": 20 * (base + j / 10 - t / 2),
                          "passes": 20} for i in range(3)]
    table = headline_table(pd.DataFrame(rows), paper).set_index("composition")
    assert list(table.columns) == ["target", "T=0 eagle2", "T=0 eagle2 paper", "T=1 eagle2", "T=1 eagle2 paper"]
    assert table.loc["math", "T=0 eagle2"] == "3.15 [3.15, 3.15] (n=3)"  # every prompt alike: no uncertainty
    assert table.loc["math", "T=1 eagle2"] == "2.65 [2.65, 2.65] (n=3)" and table.loc["chat", "T=1 eagle2"] == ""
    assert table.loc["math", "T=0 eagle2 paper"] == "4.42" and table.loc["chat", "T=0 eagle2 paper"] == ""
