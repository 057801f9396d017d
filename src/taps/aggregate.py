"""Every evaluation's raw rows gathered into the tidy frames tables, figures and findings read.

An evaluation directory (`workflow/scripts/evaluate.py`) holds raw rows: turns, cycles, drafted
nodes, routed candidates, and the composition in `config.json`. Nothing is averaged there;
everything averaged is computed here, once, through `taps.metrics`:

- `evaluation_rows`: one row per evaluation (target, backbone, composition, benchmark,
  temperature): tau with its 95% bootstrap CI over prompts, acceptance per depth, nodes per
  pass, the tree (total_tokens/depth/top_k) and, for a tuned one, rule tune_tree's predicted
  tokens/s, tokens/s and speedup from the timed turns, the engine - replay difference, routing shares,
  and at T=0 the timed turns whose output differed from vanilla's (`mismatched_turns`) and the
  replayed turns whose reference is not the target's one-pass argmax somewhere
  (`reference_mismatched_turns`, NaN without replay): 0 unless `EvalConfig.on_mismatch` is "record";
- `prompt_rows`: new tokens and passes per prompt, for paired comparisons (`taps.comparisons`);
- `depth_rows`: drafted and accepted nodes per prompt, drafter and depth, and the cycles that
  reached and passed each depth (the conditional acceptance rate per speculative step);
- `node_sample`: a seeded sample of drafted nodes (confidence, entropy, accepted);
- `routing_rows`: every routed cycle replay scored, with each drafter's signals and the drafted
  tokens its tree would have had accepted, the reference tokens left and the tree's draft levels;
- `replay_turns`: timed T=0 turns with the engine's and replay's counts (`replay_error` pools them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from taps.intermediates import MissingIntermediate, fix, read_json, read_parquet
from taps.metrics import bootstrap_ci, paired_ratio_bootstrap

KEYS = ["target", "backbone", "composition", "benchmark", "temperature"]
TABLES = ("turns", "cycles", "nodes", "candidates")


@dataclass
class Evaluation:
    """One evaluation directory, read."""

    turns: pd.DataFrame
    cycles: pd.DataFrame
    nodes: pd.DataFrame
    candidates: pd.DataFrame
    spec: dict  # {name, composition, drafters, options}
    depth: int  # the tree's draft levels (TreeConfig.depth + 1)
    tree: dict | None = None  # TreeConfig fields, as config.json holds them
    predicted: dict | None = None  # rule tune_tree's prediction for a composition with `tree: tuned`

    @property
    def key(self) -> dict:
        first = self.turns.iloc[0]
        return {k: (float(first[k]) if k == "temperature" else first[k]) for k in KEYS}

    @property
    def labels(self) -> dict:
        options = self.spec.get("options", {})
        merged = self.spec["composition"] == "merged-tree"
        return {**self.key, "kind": self.spec["composition"], "drafters": "|".join(self.spec["drafters"]),
                "budget": options.get("budget", "paper") if merged else None,
                "trie": options.get("trie", True) if merged else None}


def read_evaluation(directory: str) -> Evaluation:
    """The raw rows and settings of one evaluation; one clear error for a directory that is not one."""
    missing = [p for p in (os.path.join(directory, f) for f in ("config.json", "turns.parquet")) if not os.path.exists(p)]
    if missing:
        raise MissingIntermediate(f"{directory} is not an evaluation directory (no {', '.join(missing)}); "
                                  + fix("evaluation output", directory))
    config = read_json(os.path.join(directory, "config.json"), "evaluation output", directory)
    frames = {name: read_parquet(os.path.join(directory, f"{name}.parquet"), "evaluation output", directory)
              if os.path.exists(os.path.join(directory, f"{name}.parquet")) else pd.DataFrame() for name in TABLES}
    if frames["turns"].empty:
        raise ValueError(f"{directory}: the evaluation has no turns")
    return Evaluation(**frames, spec=config["composition"], depth=config["tree"]["depth"] + 1, tree=config["tree"],
                      predicted=config.get("predicted"))


def _ratio_diff_ci(a_num, a_den, b_num, b_den, seed: int) -> tuple[float, float, float]:
    """sum(a_num)/sum(a_den) - sum(b_num)/sum(b_den) with its 95% CI, turns resampled together (paired)."""
    return paired_ratio_bootstrap({"a": list(a_num), "b": list(b_num)}, {"a": list(a_den), "b": list(b_den)},
                                  {"a": 0, "b": 0}, lambda r: r["a"] - r["b"], seed=seed)


def acceptance_by_depth(accepted: pd.Series, depth: int) -> dict[str, float]:
    """accept_d{k}: cycles accepting >= k drafted tokens / cycles accepting >= k - 1 (NaN when none did)."""
    counts = [(accepted >= k).sum() for k in range(depth + 1)]
    return {f"accept_d{k}": counts[k] / counts[k - 1] if counts[k - 1] else float("nan") for k in range(1, depth + 1)}


def evaluation_row(ev: Evaluation, seed: int = 0) -> dict:
    """The one-row summary of an evaluation (module docstring); timing and replay columns NaN when untimed."""
    turns, cycles, nan, greedy = ev.turns, ev.cycles, float("nan"), ev.key["temperature"] == 0
    per_prompt = turns.groupby("prompt")[["new_tokens", "passes"]].sum()
    tau, low, high = bootstrap_ci(per_prompt.new_tokens.tolist(), per_prompt.passes.tolist(), seed=seed)
    engine = turns[turns["mode"] == "engine"]
    timed = _timed(turns)
    speed = _engine_tokens(timed).sum() / timed.seconds.sum() if len(timed) else nan
    vanilla = timed.vanilla_new_tokens.sum() / timed.vanilla_seconds.sum() if len(timed) else nan
    both = engine[engine.get("replay_passes", pd.Series(index=engine.index, dtype=float)).notna()]
    diff = (_ratio_diff_ci(both.new_tokens, both.passes, both.replay_new_tokens, both.replay_passes, seed)
            if len(both) else (nan, nan, nan))
    row = {**ev.labels, "prompts": len(per_prompt), "turns": len(turns), "tau": tau, "tau_low": low, "tau_high": high,
           **acceptance_by_depth(cycles.accepted, ev.depth), "nodes_per_pass": cycles.nodes.mean(),
           # drafter passes (tree levels, commits, catch-ups; every drafter's) per target pass
           "drafter_steps_per_pass": turns.drafter_steps.sum() / turns.passes.sum() if "drafter_steps" in turns else nan,
           "tree": "{total_tokens}/{depth}/{top_k}".format(**ev.tree) if ev.tree else None,
           # rule tune_tree's tokens/s for this drafter's tuned tree, predicted from development prompts
           "predicted_tokens_per_s": ev.predicted["tokens_per_s"] if ev.predicted else nan,
           "timed_turns": len(timed), "tokens_per_s": speed, "vanilla_tokens_per_s": vanilla,
           "speedup": speed / vanilla if len(timed) else nan,
           # greedy output equal to vanilla's on every timed turn; None at T > 0, where samples differ by design
           "prefill_ms": 1e3 * timed.get("prefill_seconds", pd.Series(dtype=float)).mean(),
           "vanilla_prefill_ms": 1e3 * timed.get("vanilla_prefill_seconds", pd.Series(dtype=float)).mean(),
           "identical": bool(engine.identical.dropna().astype(bool).all()) if greedy else None,
           "mismatched_turns": int((engine.identical == False).sum()) if greedy else nan,  # noqa: E712
           "reference_mismatched_turns": _reference_mismatched_turns(turns),
           "replay_turns": len(both), "replay_diff": diff[0], "replay_diff_low": diff[1], "replay_diff_high": diff[2],
           "replay_mismatches": int((both.replay_matches == False).sum())}  # noqa: E712
    multi = len(ev.spec["drafters"]) > 1
    decided = cycles[cycles.drafter >= 0]
    for i in range(2):
        row[f"share_{i}"] = float((decided.drafter == i).mean()) if multi and len(decided) else nan
    return row


def _reference_mismatched_turns(turns: pd.DataFrame) -> float:
    """Replayed turns whose reference is not the target's one-pass argmax somewhere (EvalConfig.on_mismatch
    "record"); NaN when no turn read a reference (no replay, or rows written before the count was kept)."""
    counts = turns.get("reference_mismatches", pd.Series(dtype=float)).dropna()
    return int((counts > 0).sum()) if len(counts) else float("nan")


def _engine_tokens(turns: pd.DataFrame) -> pd.Series:
    """The engine's own new tokens on each turn (at T > 0 replay's records walk another sample; rows written
    before `engine_new_tokens` was kept hold the engine's counts in `new_tokens`)."""
    return turns["engine_new_tokens"] if "engine_new_tokens" in turns else turns["new_tokens"]


def _timed(turns: pd.DataFrame) -> pd.DataFrame:
    """The turns timed side by side with vanilla (rows written before the `timed` column: engine turns)."""
    return turns[turns["timed"].astype(bool)] if "timed" in turns else turns[turns["mode"] == "engine"]


TIMING = ("seconds", "prefill_seconds", "vanilla_new_tokens", "vanilla_seconds", "vanilla_prefill_seconds")


def prompt_rows(ev: Evaluation) -> pd.DataFrame:
    """New tokens and passes per prompt (turns summed); and for a timed prompt its timed turns' engine new
    tokens (`timed_tokens`), decode and prefill seconds, and vanilla's (NaN for a prompt not timed)."""
    counts = ev.turns.groupby("prompt", sort=False)[["new_tokens", "passes"]].sum()
    timed = _timed(ev.turns)
    timed = timed.reindex(columns=["prompt", *TIMING]).assign(timed_tokens=_engine_tokens(timed))
    timing = timed.groupby("prompt").sum(min_count=1)
    counts = counts.join(timing, how="left").reset_index()
    labels = {k: v for k, v in ev.labels.items() if k not in ("budget", "trie")}
    return counts.assign(**labels)[[*labels, "prompt", "new_tokens", "passes", "timed_tokens", *TIMING]]


def depth_rows(ev: Evaluation) -> pd.DataFrame:
    """Per prompt, drafter and depth k: drafted and accepted nodes; and for a single drafter the cycles
    that reached depth k (accepted >= k - 1 drafted tokens) and passed it (accepted >= k), whose ratio
    is the conditional acceptance rate at step k (NaN for compositions of several drafters)."""
    if ev.nodes.empty:
        return pd.DataFrame()
    grouped = ev.nodes.groupby(["prompt", "drafter", "depth"]).accepted.agg(drafted="size", accepted="sum")
    out = grouped.reset_index().assign(**ev.key)
    out["drafter_name"] = out.drafter.map(dict(enumerate(ev.spec["drafters"])))
    out["accepted"] = out.accepted.astype(int)
    steps = pd.DataFrame([{"prompt": prompt, "depth": k, "reached": int((acc >= k - 1).sum()),
                           "passed": int((acc >= k).sum())}
                          for prompt, acc in ev.cycles.groupby("prompt").accepted for k in range(1, ev.depth + 1)])
    if len(ev.spec["drafters"]) == 1 and len(steps):
        out = out.merge(steps, on=["prompt", "depth"], how="left")
    else:
        out["reached"], out["passed"] = float("nan"), float("nan")
    return out[[*KEYS, "prompt", "drafter", "drafter_name", "depth", "drafted", "accepted", "reached", "passed"]]


def node_sample(ev: Evaluation, limit: int = 5000, seed: int = 0) -> pd.DataFrame:
    """At most `limit` drafted nodes drawn by a seeded choice, with the drafter's name."""
    nodes = ev.nodes
    if nodes.empty:
        return pd.DataFrame()
    if len(nodes) > limit:
        nodes = nodes.iloc[np.sort(np.random.default_rng(seed).choice(len(nodes), limit, replace=False))]
    out = nodes[["depth", "confidence", "entropy", "accepted"]].assign(**ev.key)
    out["drafter_name"] = nodes.drafter.map(dict(enumerate(ev.spec["drafters"]))).values
    return out[[*KEYS, "depth", "confidence", "entropy", "accepted", "drafter_name"]]


def routing_rows(ev: Evaluation) -> pd.DataFrame:
    """Routed cycles that replay scored: both trees' signals and acceptance, the tree kept (`chosen`), the
    reference tokens left at the cycle (`remaining`) and the tree's draft levels (`levels`).

    A tree's deepest drafted node sits at level `levels` (TreeConfig.depth + 1: the root's children, then
    one level per expansion; `taps.draft`), so a pass emits at most levels + 1 tokens: the longest
    accepted path and the target's own next token. `accepted_i` walks the reference's remainder
    (`taps.compose.candidate_scores`), so it is the tree's acceptance unaffected by the turn's end
    (max_new_tokens, EOS, a stop string) exactly when remaining >= levels + 1 (`taps.same_contexts.uncut`).
    """
    if ev.candidates.empty:
        return pd.DataFrame()
    cycles = ev.cycles.sort_values(["prompt", "turn", "cycle"])
    before = cycles.groupby(["prompt", "turn"]).emitted.cumsum() - cycles.emitted  # emitted by earlier cycles
    # replay emits the reference it walked (greedy output or sample), so its length is the turn's new tokens
    reference = ev.turns.set_index(["prompt", "turn"]).new_tokens + 1  # the prefill's token included
    # tokens generated before the cycle: the prefill's token and what earlier cycles emitted
    remaining = reference.reindex(pd.MultiIndex.from_frame(cycles[["prompt", "turn"]])).to_numpy() - (1 + before)
    kept = cycles[["prompt", "turn", "cycle"]].assign(chosen=cycles.drafter, remaining=remaining.astype(int))
    out = ev.candidates.merge(kept, on=["prompt", "turn", "cycle"], how="left")
    return out.assign(levels=ev.depth, drafters="|".join(ev.spec["drafters"]))


def aggregate(directories: list[str], seed: int = 0) -> dict[str, pd.DataFrame]:
    """{evaluations, prompts, depth, nodes, routing, replay} over every evaluation directory (module docstring)."""
    parts: dict[str, list] = {"evaluations": [], "prompts": [], "depth": [], "nodes": [], "routing": [], "replay": []}
    for directory in directories:
        ev = read_evaluation(directory)
        parts["evaluations"].append(pd.DataFrame([evaluation_row(ev, seed)]))
        parts["prompts"].append(prompt_rows(ev))
        parts["depth"].append(depth_rows(ev))
        parts["nodes"].append(node_sample(ev, seed=seed))
        parts["routing"].append(routing_rows(ev))
        parts["replay"].append(replay_turns(ev))
    frames = {}
    for name, items in parts.items():
        items = [f for f in items if not f.empty]
        frames[name] = pd.concat(items, ignore_index=True) if items else pd.DataFrame()
    if not frames["evaluations"].empty:
        frames["evaluations"] = frames["evaluations"].sort_values(["target", "backbone", "temperature"], kind="stable")
    return frames


def replay_turns(ev: Evaluation) -> pd.DataFrame:
    """The timed T=0 turns that were also replayed: the engine's and replay's counts side by side."""
    turns = ev.turns
    if "replay_passes" not in turns:
        return pd.DataFrame()
    both = turns[(turns["mode"] == "engine") & turns.replay_passes.notna()]
    return both[[*KEYS, "prompt", "turn", "new_tokens", "passes", "replay_new_tokens", "replay_passes",
                 "replay_matches"]]


def replay_error(replay: pd.DataFrame, seed: int = 0) -> dict:
    """Replay's measured error over `replay_turns` rows: turns, distinct prompts, turns whose records differed,
    and the engine - replay difference in tau (pooled ratio of sums) with its 95% bootstrap CI over prompts:
    the turns of one prompt (every composition timed on it, every turn) are resampled together, as they share
    the prompt's contexts."""
    if replay.empty:
        return {"turns": 0, "prompts": 0, "differing": 0, "diff": float("nan"), "low": float("nan"),
                "high": float("nan")}
    unit = [c for c in ("target", "benchmark", "prompt") if c in replay] or [replay.index.name or "index"]
    counts = ["new_tokens", "passes", "replay_new_tokens", "replay_passes"]
    by = replay.reset_index().groupby(unit, sort=False)[counts].sum()
    diff = _ratio_diff_ci(by.new_tokens, by.passes, by.replay_new_tokens, by.replay_passes, seed)
    return {"turns": len(replay), "prompts": len(by), "differing": int((replay.replay_matches == False).sum()),  # noqa: E712
            "diff": diff[0], "low": diff[1], "high": diff[2]}


def temperature_pairs(P: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The temperature effect on the same prompts: for every (target, backbone, composition, benchmark)
    evaluated at the lowest and at the highest temperature of `P` (`prompt_rows`), tau at each over the
    prompts both have (`prompts`), with 95% bootstrap CIs, and the paired difference hot - cold with its
    95% CI (prompts resampled together)."""
    temps = sorted(P["temperature"].astype(float).unique()) if len(P) else []
    if len(temps) < 2:
        return pd.DataFrame()
    cold, hot = temps[0], temps[-1]
    on = ["target", "backbone", "composition", "benchmark", "prompt"]
    both = P[P.temperature == cold][on + ["new_tokens", "passes"]].merge(
        P[P.temperature == hot][on + ["new_tokens", "passes"]], on=on, suffixes=("_cold", "_hot"))
    rows = []
    for key, g in both.groupby(on[:-1], sort=False):
        row = {**dict(zip(on[:-1], key)), "prompts": len(g), "cold": cold, "hot": hot}
        for side in ("cold", "hot"):
            tau = bootstrap_ci(g[f"new_tokens_{side}"].tolist(), g[f"passes_{side}"].tolist(), seed=seed)
            row.update(zip((f"tau_{side}", f"tau_low_{side}", f"tau_high_{side}"), tau))
        diff = _ratio_diff_ci(g.new_tokens_hot, g.passes_hot, g.new_tokens_cold, g.passes_cold, seed)
        rows.append({**row, **dict(zip(("diff", "diff_low", "diff_high"), diff))})
    return pd.DataFrame(rows)

