"""The SLURM profile on a real cluster: the smoke DAG submitted through sbatch gives the outputs a local run gives.

Needs a running cluster with the profile's partition, e.g. the one-node cluster of
profiles/slurm/local-cluster.sh (`pytest -m slurm`); skipped without one."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# columns that time something: the only content two runs of the smoke DAG may differ in
TIMINGS = ["seconds", "vanilla_seconds", "prefill_seconds", "vanilla_prefill_seconds", "tokens_per_s",
           "vanilla_tokens_per_s", "speedup", "prefill_ms", "vanilla_prefill_ms", "predicted_tokens_per_s"]
# files made of timings or run metadata: benchmarks, logs, the speed tables, PDFs (they carry a creation date),
# rule tune_tree's measured costs and prediction
UNCOMPARED = re.compile(r"^(benchmarks|logs|tune)/|^tables/speed\.|\.pdf$")
EVAL_CONFIG = re.compile(r"^eval/.*/config\.json$")  # compared without `predicted`: tune_tree's timing-based prediction
# what tests/test_workflow.py adds to the shared local run (the report, drafters imported back): not the DAG's
ADDED = re.compile(r"^released/|^report\.html$")


def _snakemake(*args, timeout=1500):
    return subprocess.run([*SNAKEMAKE, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _require_cluster():
    """Skip unless sbatch, sinfo and the SLURM plugin are here and the profile's partition has a node up."""
    if not (shutil.which("sbatch") and shutil.which("sinfo")):
        pytest.skip("no Slurm here (sbatch, sinfo): start one with profiles/slurm/local-cluster.sh")
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e '.[test]' installs the SLURM plugin")
    partition = yaml.safe_load(PROFILE.read_text())["default-resources"]["slurm_partition"]
    try:
        states = subprocess.run(["sinfo", "-h", "-p", partition, "-o", "%t"], capture_output=True, text=True,
                                timeout=20).stdout.split()
    except subprocess.TimeoutExpired:
        states = []
    if not any(s.rstrip("*~#") in ("idle", "mix", "alloc") for s in states):
        pytest.skip(f"the Slurm cluster does not answer or has no node up in partition {partition!r}")


def _same_outputs(local: Path, slurm: Path):
    """Every output file of `slurm` equals its twin under `local`, paths inside them aside; Parquet files
    without their timing columns."""
    files = sorted(f for f in (p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
                   if not ADDED.search(f))
    assert files == sorted(p.relative_to(slurm).as_posix() for p in slurm.rglob("*") if p.is_file())
    compared = [f for f in files if not UNCOMPARED.search(f)]
    for name in compared:
        a, b = local / name, slurm / name
        if name.endswith(".parquet"):
            frames = [pd.read_parquet(p).drop(columns=TIMINGS, errors="ignore") for p in (a, b)]
            pd.testing.assert_frame_equal(*frames, check_exact=True, obj=name)
            meta = [pq.read_schema(p).metadata for p in (a, b)]
            assert str(meta[0]) == str(meta[1]).replace(str(slurm), str(local)), name
        elif EVAL_CONFIG.search(name):
            first, second = (json.loads(p.read_bytes().replace(bytes(slurm), bytes(local))) for p in (a, b))
            first.pop("predicted", None), second.pop("predicted", None)
            assert first == second, name
        else:
            assert a.read_bytes() == b.read_bytes().replace(bytes(slurm), bytes(local)), name
    return compared


def test_the_smoke_dag_through_sbatch_gives_the_local_outputs(request, tmp_path):
    """The smoke DAG through the SLURM profile (every job but `all` an sbatch job, status from squeue) and
    locally. Equal outputs: data, features, vocabulary, every drafter's weights, evaluation rows, tables,
    figures (PNG) and findings; `results` paths written into JSON and Parquet metadata aside. Not equal, so
    not compared: what times something (the seconds, tokens/s and speedup columns, tables/speed.*,
    benchmarks/), the logs, and the PDFs, which carry their creation date. The profile runs as it is but
    for `use-conda` (conda channels cannot be reached from CI, which installs with pip)."""
    _require_cluster()
    profile = yaml.safe_load(PROFILE.read_text())
    del profile["use-conda"]
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    slurm, logs = tmp_path / "slurm", tmp_path / "slurm_logs"
    local, local_log = request.getfixturevalue("smoke_results")  # run locally once per test session
    run = _snakemake("--profile", str(tmp_path / "profile"), "--configfile", "config/smoke.yaml",
                     "--config", f"results={slurm}", f"data_dir={DATA}",
                     # keep every job's Slurm log; check a job's status 2 s after it is submitted, not 40
                     "--slurm-logdir", str(logs), "--slurm-keep-successful-logs",
                     "--slurm-init-seconds-before-status-checks", "2")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]

    # every job the local run ran, `all` aside, was a Slurm job: submitted, and its log written by Slurm
    jobs = [rule for rule in re.findall(r"^localrule (\w+):", local_log, re.M) if rule != "all"]
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (.+?)\)", out)
    assert len(submitted) == len(jobs) and len({jobid for jobid, _ in submitted}) == len(jobs)
    assert {p.name for p in logs.iterdir()} == {f"rule_{rule}" for rule in jobs}
    for jobid, log in submitted:
        assert Path(log).name == f"{jobid}.log" and "--executor slurm-jobstep" in Path(log).read_text(), log

    compared = _same_outputs(local, slurm)
    assert any(f.endswith("drafter.safetensors") for f in compared) and "tables/evaluations.parquet" in compared
