"""Kill anywhere, resume to identical results: the smoke DAG SIGKILLed K times, then run to the end.

Snakemake and its running job are killed together (SIGKILL to the process group) at seeded moments spread
over training and evaluation; after each kill the run is resumed as a user would (`snakemake --unlock`,
then the same command with `--rerun-incomplete`). The finished outputs must equal an uninterrupted run's
(the session's shared smoke run), compared as tests/test_slurm.py compares a cluster run. Marked slow
(~3x the smoke DAG, ~10 min here): `python -m pytest -m slow`.
"""

import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dag_outputs import same_outputs

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
K = 5
SEED = 0
# where the kills go, in DAG order: each waits for a job of one of these rules to start
PHASES = [("train",), ("train",), ("evaluate_greedy", "reference"), ("evaluate_greedy", "evaluate_sampled"),
          ("evaluate_sampled", "aggregate", "tables", "figures", "findings")]
JOB_START = re.compile(r"^(?:local)?rule (\w+):")


def _command(results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/smoke.yaml",
            "--config", f"results={results}", f"data_dir={ROOT / 'data'}", *extra]


def _run_until_killed(results: Path, rules: tuple[str, ...], rng: random.Random,
                      log: list[str]) -> tuple[str, str] | None:
    """Run the DAG, SIGKILL it and its job a seeded moment after the n-th start of a job of `rules` (n seeded,
    0-2); (the rule of that job, where the kill landed), or None if the run finished first."""
    proc = subprocess.Popen(_command(results, "--rerun-incomplete"), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)],
                     daemon=True).start()
    skip, delay = rng.randint(0, 2), rng.uniform(0.2, 3.0)
    started, job, deadline, labelled = 0, None, None, False
    give_up = time.monotonic() + 1500
    while True:
        if time.monotonic() > give_up:  # a stalled run: stop it, and fail
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("the smoke DAG ran for 25 minutes without reaching its kill:\n" + "".join(log[-60:]))
        try:
            line = lines.get(timeout=0.05)
        except queue.Empty:
            line = ""
        if line is None:  # the run ended before the kill
            proc.wait()
            assert proc.returncode == 0, "".join(log[-60:])
            return None
        log.append(line)
        if (m := JOB_START.match(line)) and deadline is None and m.group(1) in rules:
            rule = job = m.group(1)
            started += 1
            if started > skip:
                deadline = time.monotonic() + delay
        elif deadline is not None and not labelled and line.strip().startswith("wildcards:"):
            job, labelled = f"{job} ({line.strip().removeprefix('wildcards: ')})", True
        if deadline is not None and time.monotonic() >= deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return rule, f"{delay:.1f} s after job {started} of {'/'.join(rules)} started: {job}"


def test_the_smoke_dag_killed_five_times_anywhere_ends_with_an_uninterrupted_runs_outputs(request, tmp_path):
    results = tmp_path / "results"
    rng = random.Random(SEED)
    log: list[str] = []
    landed = []
    for i, rules in enumerate(PHASES[:K], 1):
        killed = _run_until_killed(results, rules, rng, log)
        print(f"kill {i}/{K}: " + (killed[1] if killed else "none: the run finished first"))
        if killed is None:
            break
        landed.append(killed)
        unlock = subprocess.run(_command(results, "--unlock"), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert unlock.returncode == 0, unlock.stdout + unlock.stderr
    final = subprocess.run(_command(results, "--rerun-incomplete"), cwd=ROOT, capture_output=True, text=True,
                           timeout=1500)
    assert final.returncode == 0, final.stdout[-4000:] + final.stderr[-4000:]
    print(f"K = {len(landed)} kills survived")
    assert len(landed) == K, landed
    rules = {rule for rule, _ in landed}
    assert "train" in rules and rules & {"evaluate_greedy", "evaluate_sampled"}  # in training and in evaluation
    local, _ = request.getfixturevalue("smoke_results")
    compared = same_outputs(local, results)
    assert any(f.endswith("drafter.safetensors") for f in compared) and "tables/evaluations.parquet" in compared
    assert not list(results.rglob("*.partial"))  # an evaluation's partial turns are gone once it finishes
