"""Two runs of the smoke DAG compared output by output (tests/test_slurm.py, tests/test_kill_anywhere.py)."""

import json
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

# columns that time something: the only content two runs of the smoke DAG may differ in
TIMINGS = ["seconds", "vanilla_seconds", "prefill_seconds", "vanilla_prefill_seconds", "tokens_per_s",
           "vanilla_tokens_per_s", "speedup", "prefill_ms", "vanilla_prefill_ms", "predicted_tokens_per_s"]
# files made of timings or run metadata: benchmarks, logs, the speed tables, PDFs (they carry a creation date),
# rule tune_tree's measured costs and prediction
UNCOMPARED = re.compile(r"^(benchmarks|logs|tune)/|^tables/speed\.|\.pdf$")
EVAL_CONFIG = re.compile(r"^eval/.*/config\.json$")  # compared without `predicted`: tune_tree's timing-based prediction
# what tests/test_workflow.py adds to the shared local run (the report, drafters imported back): not the DAG's
ADDED = re.compile(r"^released/|^(benchmarks|logs)/import_drafter/|^report\.html$")


def same_outputs(local: Path, other: Path):
    """Every output file of `other` (another run of the DAG) equals its twin under `local`, the results paths written into
    them aside; Parquet files without their timing columns. Returns the files compared."""
    files = sorted(f for f in (p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
                   if not ADDED.search(f))
    assert files == sorted(p.relative_to(other).as_posix() for p in other.rglob("*") if p.is_file())
    compared = [f for f in files if not UNCOMPARED.search(f)]
    for name in compared:
        a, b = local / name, other / name
        if name.endswith(".parquet"):
            frames = [pd.read_parquet(p).drop(columns=TIMINGS, errors="ignore") for p in (a, b)]
            pd.testing.assert_frame_equal(*frames, check_exact=True, obj=name)
            meta = [pq.read_schema(p).metadata for p in (a, b)]
            assert str(meta[0]) == str(meta[1]).replace(str(other), str(local)), name
        elif EVAL_CONFIG.search(name):
            first, second = (json.loads(p.read_bytes().replace(bytes(other), bytes(local))) for p in (a, b))
            first.pop("predicted", None), second.pop("predicted", None)
            assert first == second, name
        else:
            assert a.read_bytes() == b.read_bytes().replace(bytes(other), bytes(local)), name
    return compared
