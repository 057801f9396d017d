"""Where a DAG's time went: the `s` column of every rule's benchmark file, summed per rule kind.

    python benchmarks/dag_time.py [--results results] [--config config/config.yaml] [--cores 2]

Snakemake writes one benchmark TSV per job (results/benchmarks/<rule>/...tsv): wall seconds,
memory, CPU time. This prints, per rule kind, the jobs, their summed wall time, the threads a
job of that kind asks for (as the rules declare them from the config: `threads` for target,
regenerate, extract_features and train, `evaluate.threads` for reference and evaluate, 1 for
the rest), and the kind's wall time on `--cores` cores with jobs packed by threads (summed
seconds x threads / cores), then the whole DAG's. That packing is what the cores allow; the
rules' dependencies and the scheduler's order can only add to it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml


def job_table(results: str) -> pd.DataFrame:
    """One row per benchmark file: rule kind (its first directory under benchmarks/, or its name), path, seconds."""
    root = Path(results) / "benchmarks"
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        bench = pd.read_csv(path, sep="\t")
        rows.append({"rule": path.relative_to(root).parts[0].removesuffix(".tsv"), "job": str(path.relative_to(root)),
                     "seconds": float(bench.s.iloc[-1])})
    if not rows:
        raise FileNotFoundError(f"no benchmark files under {root}: run the workflow first")
    return pd.DataFrame(rows)


def rule_threads(config: dict) -> dict[str, int]:
    """Threads per rule kind, as workflow/rules/*.smk declare them (rules not named here: 1)."""
    threads = config.get("threads", 2)
    evaluate = config.get("evaluate", {}).get("threads", threads)
    return {"target": threads, "regenerate": threads, "extract_features": threads, "train": threads,
            "reference": evaluate, "evaluate": evaluate}


def rule_times(jobs: pd.DataFrame, threads: dict[str, int], cores: int) -> pd.DataFrame:
    """Per rule kind: jobs, summed wall minutes, threads per job, and the packed wall time on `cores` (minutes)."""
    grouped = jobs.groupby("rule", sort=False).agg(jobs=("job", "size"), seconds=("seconds", "sum"))
    per_job = grouped.index.map(lambda rule: min(threads.get(rule, 1), cores))
    return pd.DataFrame({"jobs": grouped.jobs, "minutes": grouped.seconds / 60, "threads": per_job,
                         "packed_minutes": grouped.seconds * per_job / cores / 60})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    table = rule_times(job_table(args.results), rule_threads(config), args.cores)
    print(table.to_string(float_format="%.1f"))
    print(f"\nwhole DAG: {table.minutes.sum():.1f} job-minutes; packed on {args.cores} cores "
          f"{table.packed_minutes.sum():.1f} minutes of wall time")


if __name__ == "__main__":
    main()
