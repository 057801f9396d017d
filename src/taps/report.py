"""Tables from saved evaluation rows only: acceptance length with its CI, and speed against vanilla.

Every table is computed from the raw per-turn rows (`turns.parquet`) that `taps.evaluate`
wrote, through `taps.metrics`, so no number is averaged twice or typed in by hand.
"""

from __future__ import annotations

import pandas as pd

from taps.metrics import bootstrap_ci

KEYS = ["target", "backbone", "composition", "benchmark", "temperature"]


def tau_table(turns: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per KEYS group: tau with a 95% bootstrap CI over prompts, tokens/s of both loops, speedup."""
    rows = []
    for key, group in turns.groupby(KEYS, sort=True):
        per_prompt = group.groupby("prompt")[["new_tokens", "passes", "seconds", "vanilla_new_tokens",
                                              "vanilla_seconds"]].sum()
        tau, low, high = bootstrap_ci(per_prompt.new_tokens.tolist(), per_prompt.passes.tolist(), seed=seed)
        speed = per_prompt.new_tokens.sum() / per_prompt.seconds.sum()
        vanilla = per_prompt.vanilla_new_tokens.sum() / per_prompt.vanilla_seconds.sum()
        rows.append({**dict(zip(KEYS, key)), "prompts": len(per_prompt), "tau": tau, "tau_low": low,
                     "tau_high": high, "tokens_per_s": speed, "vanilla_tokens_per_s": vanilla,
                     "speedup": speed / vanilla, "identical": bool(group.identical.all())})
    return pd.DataFrame(rows)
