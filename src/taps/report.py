"""Tables from saved evaluation rows only: acceptance length with its CI, and speed against vanilla.

Every table is computed from the raw per-turn rows (`turns.parquet`) that `taps.evaluate`
wrote, through `taps.metrics`, so no number is averaged twice or typed in by hand.
"""

from __future__ import annotations

import pandas as pd

from taps.metrics import bootstrap_ci

KEYS = ["target", "backbone", "composition", "benchmark", "temperature"]


def tau_table(turns: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per KEYS group: tau with a 95% bootstrap CI over prompts, tokens/s of both loops, speedup.

    tau counts every turn, replayed or not; tokens/s and speedup come only from the turns where
    the engine ran side by side with vanilla (`mode == "engine"`; NaN if none). `identical`
    covers the engine turns; `replay_mismatches` counts timed turns where replay differed.
    """
    rows = []
    for key, group in turns.groupby(KEYS, sort=True):
        per_prompt = group.groupby("prompt")[["new_tokens", "passes"]].sum()
        tau, low, high = bootstrap_ci(per_prompt.new_tokens.tolist(), per_prompt.passes.tolist(), seed=seed)
        timed = group[group["mode"] == "engine"]
        speed = timed.new_tokens.sum() / timed.seconds.sum() if len(timed) else float("nan")
        vanilla = timed.vanilla_new_tokens.sum() / timed.vanilla_seconds.sum() if len(timed) else float("nan")
        rows.append({**dict(zip(KEYS, key)), "prompts": len(per_prompt), "tau": tau, "tau_low": low,
                     "tau_high": high, "timed_prompts": timed.prompt.nunique(), "tokens_per_s": speed,
                     "vanilla_tokens_per_s": vanilla, "speedup": speed / vanilla,
                     "identical": bool(timed.identical.astype(bool).all()),
                     "replay_mismatches": int((group.replay_matches == False).sum())})  # noqa: E712
    return pd.DataFrame(rows)
