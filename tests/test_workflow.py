"""The Snakemake workflow: lint-clean, strict config validation, and the smoke DAG end to end."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from taps.compose import COMPOSITIONS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"  # shipped with the project
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _snakemake(*args, cwd=ROOT, timeout=1500):
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_lint_is_clean():
    run = _snakemake("--lint")
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_mistyped_config_key_is_refused_and_named(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["targets"]["tiny"]["draft_vocab_sise"] = 64
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    run = _snakemake("-n", "--configfile", str(bad))
    assert run.returncode != 0
    assert "draft_vocab_sise" in run.stdout + run.stderr


def test_smoke_dag_reaches_the_drafters_the_average_and_the_tables(tmp_path):
    results = tmp_path / "results"
    run = _snakemake("--cores", "2", "--configfile", "config/smoke.yaml",
                     "--config", f"results={results}", f"data_dir={DATA}")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    for backbone in ("eagle2", "hass"):
        for name in ("math", "chat", "mixed", "avg-math+chat"):
            drafter = results / "drafters" / "tiny" / backbone / name / "drafter"
            assert (drafter / "drafter.safetensors").is_file() and (drafter / "drafter.json").is_file()
        for name in ("math", "chat", "mixed"):  # trained with validation: the best epoch was kept
            run = results / "drafters" / "tiny" / backbone / name
            assert len(pd.read_parquet(run / "val_metrics.parquet")) == 2 if backbone == "eagle2" else 1
            assert json.loads((run / "drafter" / "selection.json").read_text())["select_by"] == "top1_step1"
    # gsm8k_train was answered by the target (rule regenerate), sharegpt by its own text (prepare_data)
    written = pd.read_parquet(results / "data" / "tiny" / "target" / "gsm8k_train.parquet")
    assert (written.writer == "tiny").all() and set(written.finish) <= {"eos", "stop", "length"}
    assert (pd.read_parquet(results / "data" / "tiny" / "dataset" / "sharegpt.parquet").writer == "dataset").all()
    # features once per source: the three mixtures read 72 conversations, 48 at most were extracted
    metas = {p.name: json.loads((p / "meta.json").read_text()) for p in (results / "features" / "tiny").iterdir()}
    assert sorted(metas) == ["gsm8k_train", "sharegpt"]
    assert sum(m["n_sequences"] for m in metas.values()) <= 48
    assert all(max(m["orders"]) < 24 and len(set(m["orders"])) == len(m["orders"]) for m in metas.values())
    table = pd.read_parquet(results / "tables" / "tau.parquet")
    smoke = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())["evaluate"]
    assert len(table) == 2 * len(smoke["compositions"]) * len(smoke["benchmarks"]) * len(smoke["temperatures"])
    assert set(table.composition) == set(smoke["compositions"])
    assert {c["composition"] for c in smoke["compositions"].values()} == set(COMPOSITIONS)
    assert table[table.temperature == 0].identical.all() and (table.tau >= 1).all()
    # T=0 replays against one reference per benchmark and times the first prompt; T=1 runs the engine
    assert (results / "references" / "tiny" / "mt_bench.parquet").is_file()
    assert (table[table.temperature == 0].timed_prompts == 1).all() and (table.replay_mismatches == 0).all()
    assert (table[table.temperature == 1].timed_prompts == smoke["prompts"]).all()
    shutil.rmtree(results)
