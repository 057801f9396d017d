"""The SLURM profile on a real cluster: the smoke DAG submitted through sbatch gives the outputs a local run gives.

Needs a running cluster with the profile's partition, e.g. the one-node cluster of
profiles/slurm/local-cluster.sh (`pytest -m slurm`); skipped without one."""

import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from dag_outputs import same_outputs

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


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


def _train_job_id(text: str) -> str | None:
    """The SLURM job id of EAGLE-2's math training job, once Snakemake has printed its block and submitted it.
    Blocks of jobs ready together follow each other without a blank line: each is its `rule` line and the
    4-space indented lines under it."""
    for block in re.finditer(r"^rule train:\n((?: {4}.*\n)+)", text, re.M):
        body = block.group(1)
        if re.search(r"^ {4}wildcards: target=tiny, backbone=eagle2, dataset=math$", body, re.M):
            jobid = re.search(r"^ {4}jobid: (\d+)$", body, re.M).group(1)
            submitted = re.search(rf"Job {jobid} has been submitted with SLURM jobid (\d+)", text)
            return submitted and submitted.group(1)
    return None


def _run_killing_one_train_job(command: list[str]) -> tuple[str, str]:
    """Run the DAG through Slurm; once EAGLE-2's math drafter's train job has run for 2 s, `scancel
    --signal=KILL` it. The run must still succeed: Snakemake resubmits the failed job (the profile's
    `retries`), which resumes from its saved state if it had one. Returns the run's output and the killed id."""
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    killed = None
    try:
        while proc.poll() is None and killed is None:
            time.sleep(0.2)
            jobid = _train_job_id("".join(lines))
            if jobid:
                state = subprocess.run(["squeue", "-h", "-j", jobid, "-o", "%T %M"], capture_output=True,
                                       text=True).stdout.split()
                if state and state[0] == "RUNNING" and state[1] not in ("0:00", "0:01"):
                    # were it to end meanwhile, nothing is resubmitted: the caller's count of submissions says so
                    subprocess.run(["scancel", "--signal=KILL", jobid])
                    killed = jobid
        proc.wait(timeout=1500)
    finally:
        if proc.poll() is None:  # a failed assertion or a timeout: leave no Snakemake nor its cluster jobs behind
            proc.kill()
            subprocess.run(["scancel", *re.findall(r"SLURM jobid (\d+)", "".join(lines))], capture_output=True)
    reader.join()
    out = "".join(lines)
    assert killed, "the train job finished before it could be killed:\n" + out[-3000:]
    assert proc.returncode == 0, out[-4000:]
    return out, killed


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
    command = [*SNAKEMAKE, "--profile", str(tmp_path / "profile"), "--configfile", "config/smoke.yaml",
               "--config", f"results={slurm}", f"data_dir={DATA}",
               # keep every job's Slurm log; check a job's status 2 s after it is submitted, not 40
               "--slurm-logdir", str(logs), "--slurm-keep-successful-logs",
               "--slurm-init-seconds-before-status-checks", "2"]
    out, killed = _run_killing_one_train_job(command)
    print(f"scancel --signal=KILL {killed}: " + ("resumed from its saved state" if "resumed at step" in
          (slurm / "logs" / "train" / "tiny" / "eagle2" / "math.log").read_text() else "killed before its first "
          "saved state: trained afresh"))

    # every job the local run ran, `all` aside, was a Slurm job: submitted, and its log written by Slurm; the
    # killed one twice (the profile's retries)
    jobs = [rule for rule in re.findall(r"^localrule (\w+):", local_log, re.M) if rule != "all"]
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (.+?)\)", out)
    assert len(submitted) == len(jobs) + 1, f"{len(submitted)} submissions for {len(jobs)} jobs and one killed"
    assert len({jobid for jobid, _ in submitted}) == len(jobs) + 1
    assert killed in {jobid for jobid, _ in submitted}
    assert {p.name for p in logs.iterdir()} == {f"rule_{rule}" for rule in jobs}
    for jobid, log in submitted:  # the killed job's log holds Slurm's cancel message alone
        assert Path(log).name == f"{jobid}.log", log
        assert jobid == killed or "--executor slurm-jobstep" in Path(log).read_text(), log

    compared = same_outputs(local, slurm)
    assert any(f.endswith("drafter.safetensors") for f in compared) and "tables/evaluations.parquet" in compared
