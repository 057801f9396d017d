"""Verdicts: how a claim's paired comparisons become a verdict on each comparison and on the claim.

A comparison is "equivalent" when its whole 95% CI lies within +/- its margin (a difference too small
to matter, significant or not); otherwise "reproduced" / "not reproduced" when its p, Holm-adjusted
over the claim's deciding comparisons (family-wise ALPHA), is below ALPHA with the difference above /
below 0; "inconclusive" otherwise. A claim is not reproduced when any deciding comparison is,
reproduced when all are, equivalent when none is inconclusive and at least one is equivalent, and
inconclusive otherwise. Rows that do not decide are read at their own p and left out of Holm.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from taps.metrics import holm

ALPHA = 0.05  # family-wise error rate of a claim's directional calls (Holm); the CIs are 95%


def _verdict(diff: float, low: float, high: float, p: float, margin: float) -> str:
    if -margin <= low and high <= margin:
        return "equivalent"  # before significance: a significant but negligible difference is no finding
    if p < ALPHA:
        return "reproduced" if diff > 0 else "not reproduced"
    return "inconclusive"


def decide(rows: pd.DataFrame, margin: float) -> tuple[pd.DataFrame, str]:
    """One claim's comparisons (columns diff, low, high, p, decides) -> (rows with p_holm and verdict, claim verdict).

    Holm runs over the deciding rows only; reported rows (decides False) are read at their own p.
    """
    rows = rows.copy()
    deciding = rows.decides.to_numpy(bool)
    rows["p_holm"] = np.nan
    rows.loc[deciding, "p_holm"] = holm(rows.p[deciding])
    margins = rows["margin"].fillna(margin) if "margin" in rows else pd.Series(margin, index=rows.index)
    rows["verdict"] = [_verdict(r.diff, r.low, r.high, r.p_holm if r.decides else r.p, m)
                       for r, m in zip(rows.itertuples(), margins)]
    verdicts = list(rows.verdict[deciding])
    if "not reproduced" in verdicts:
        return rows, "not reproduced"
    if all(v == "reproduced" for v in verdicts):
        return rows, "reproduced"
    return rows, "equivalent" if "inconclusive" not in verdicts else "inconclusive"
