"""The Snakemake workflow: lint-clean, strict config validation, and the smoke DAG end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from taps.compose import COMPOSITIONS
from taps.findings import CLAIMS

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


@pytest.mark.parametrize("prompts, sampled, named", [({"mt_bench": 2}, 1, "benchmark 'gsm8k'"),
                                                      ({"mt_bench": 2, "gsm8k": 1}, 2, "exceeds evaluate.prompts (1) on gsm8k"),
                                                      ({"mt_bench": 2, "gsm8k": 2, "gsm8": 2}, 1, "names gsm8, not in")])
def test_a_prompts_mapping_names_every_benchmark_and_covers_the_sampled_prompts(tmp_path, prompts, sampled, named):
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["evaluate"]["prompts"], config["evaluate"]["sampled"]["prompts"] = prompts, sampled
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    run = _snakemake("-n", "--configfile", str(bad))
    assert run.returncode != 0
    assert named in run.stdout + run.stderr


def test_smoke_dag_reaches_the_drafters_the_tables_the_figures_the_findings_and_the_report(smoke_results, tmp_path):
    results, _ = smoke_results  # adds report.html and released/ (tests/test_slurm.py leaves them out)
    for backbone in ("eagle2", "hass"):
        for name in ("math", "chat", "mixed", "avg-math+chat"):
            drafter = results / "drafters" / "tiny" / backbone / name / "drafter"
            assert (drafter / "drafter.safetensors").is_file() and (drafter / "drafter.json").is_file()
    # init_seeds: math-s1 started from seed 1 (math from seed 0); the control line's point at alpha 0.25
    # weighs them 0.75 / 0.25. The lines are EAGLE-2's alone (interpolation_backbones): HASS trains none of them
    drafters = results / "drafters" / "tiny"
    seeds = [json.loads((drafters / "eagle2" / n / "drafter" / "drafter.json").read_text()) for n in ("math", "math-s1")]
    assert [s["config"]["seed"] for s in seeds] == [0, 1]
    assert json.loads((drafters / "eagle2" / "avg-control@0.25" / "drafter" / "average.json").read_text())["weights"] \
        == [0.75, 0.25]
    assert not any((drafters / "hass" / n).exists() for n in ("math-s1", "chat-s1", "avg-control@0.25"))
    for backbone in ("eagle2", "hass"):
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
    table = pd.read_parquet(results / "tables" / "evaluations.parquet")
    smoke = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())["evaluate"]
    sampled = smoke["sampled"]
    # the interpolation lines add their endpoints' and inner points' compositions (the shared midpoint is
    # `averaged`, an average of the same members and weights)
    lines = {"chat-s1", "math-s1", "shared@0.25", "independent@0.25", "independent@0.5", "control@0.25", "control@0.5"}
    greedy_compositions = set(smoke["compositions"]) | lines
    assert len(table) == (2 * len(smoke["compositions"]) + len(lines)) * len(smoke["benchmarks"]) + len(
        sampled["backbones"]) * len(sampled["compositions"]) * len(sampled["benchmarks"])
    assert set(table.composition) == greedy_compositions
    assert not lines & set(table[table.backbone == "hass"].composition)
    assert {c["composition"] for c in smoke["compositions"].values()} == set(COMPOSITIONS)
    assert table[table.temperature == 0].identical.all() and (table.tau >= 1).all()
    # T=0 replays against one reference per benchmark and times the first prompt (engine and replay
    # both kept); T=1 replays along one sample per turn and times the first prompt too
    assert (results / "references" / "tiny" / "mt_bench.parquet").is_file()
    greedy = table[table.temperature == 0]
    assert (greedy.timed_turns >= 1).all() and (greedy.replay_turns == greedy.timed_turns).all()
    assert (table[table.temperature == 1].timed_turns == sampled["prompts"]).all()
    # evaluate.prompts per benchmark at T=0; T=1's one prompt is among T=0's (nested seeded samples)
    rows = pd.read_parquet(results / "tables" / "prompts.parquet")
    counts = rows[rows.temperature == 0].groupby("benchmark").prompt.nunique().to_dict()
    assert counts == smoke["prompts"] and (greedy.prompts == greedy.benchmark.map(smoke["prompts"])).all()
    hot = rows[rows.temperature == 1]
    assert hot.prompt.nunique() == sampled["prompts"]
    assert set(hot.prompt) <= set(rows[(rows.temperature == 0) & (rows.benchmark == "gsm8k")].prompt)
    # rule tune_tree chose math's tree from development prompts; math@tuned was evaluated and timed with it
    for backbone in ("eagle2", "hass"):
        tuned = json.loads((results / "tune" / "tiny" / backbone / "math.json").read_text())
        smoke_tune = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())["tune"]
        assert tuned["tree"]["total_tokens"] in smoke_tune["sizes"] and tuned["tree"]["depth"] in smoke_tune["depths"]
        assert tuned["prompts"] == smoke_tune["dev_prompts"] and tuned["predicted"]["tokens_per_s"] > 0
        used = json.loads((results / "eval" / "tiny" / backbone / "math@tuned" / "gsm8k" / "T0" / "config.json").read_text())
        assert used["tree"] == tuned["tree"] and used["predicted"] == tuned["predicted"]
    speed = pd.read_csv(results / "tables" / "speed.csv")
    tuned_speed = speed[speed.composition == "math@tuned"]
    assert len(tuned_speed) == 2 and tuned_speed["predicted tokens/s"].notna().all()  # both backbones timed
    # every table, figure and the findings; the report with them
    for name in ("headline", "main", "compositions", "routing", "speed", "temperature", "replay", "interpolation"):
        for ext in ("md", "tex", "csv"):
            assert (results / "tables" / f"{name}.{ext}").stat().st_size > 0
    # the headline has every configured composition, averaged too (the shared line's midpoint), and none of the
    # points the interpolation lines add (they are drawn)
    headline = set(pd.read_csv(results / "tables" / "headline.csv").composition)
    assert {"averaged", "math", "route-confidence"} <= headline
    assert not {"shared@0.25", "independent@0.5", "control@0.5"} & headline
    for name in ("tau_T0", "confidence_entropy", "routing_oracle", "depth", "temperature", "interpolation"):
        assert (results / "figures" / f"{name}.png").stat().st_size > 1000
        assert (results / "figures" / f"{name}.pdf").stat().st_size > 1000
    claims = pd.read_parquet(results / "findings.parquet")
    assert list(claims.claim.unique()) == list(CLAIMS) and "## (a)" in (results / "findings.md").read_text()
    assert "interpolations shared, independent and control" not in " ".join(claims.reason)  # (i) read the lines
    assert (claims[(claims.claim == "j") & (claims.temperature == 0)].reason == "").all()  # (j): the selections
    report = _snakemake("--configfile", "config/smoke.yaml", "--config", f"results={results}", f"data_dir={DATA}",
                        "--report", str(results / "report.html"))
    assert report.returncode == 0, report.stderr[-4000:]
    html = (results / "report.html").read_text()
    assert "main.md" in html and "routing_oracle.png" in html and "findings.md" in html
    again = _snakemake("-n", "--configfile", "config/smoke.yaml", "--config", f"results={results}", f"data_dir={DATA}")
    assert "Nothing to be done" in again.stdout + again.stderr  # nothing changed: no job runs again
    _exports_import_back_as_released_drafters(results, tmp_path)


def _exports_import_back_as_released_drafters(results, tmp_path):
    """The smoke `export` wrote math in SGLang's layout; named as a released drafter (rule import_drafter)
    it comes back with the trained weights."""
    exports = {b: results / "export" / "tiny" / b / "math" for b in ("eagle2", "hass")}
    for export in exports.values():
        assert json.loads((export / "config.json").read_text())["architectures"] == ["LlamaForCausalLMEagle"]
        assert (export / "model.safetensors").is_file() and (export / "token_map.pt").is_file()
    extra = tmp_path / "released.yaml"
    extra.write_text(yaml.safe_dump({"targets": {"tiny": {"released": {
        b: {"released-math": str(e)} for b, e in exports.items()}}}}))
    imported = [results / "released" / "tiny" / b / "released-math" / "drafter" for b in exports]
    run = _snakemake("--cores", "2", *map(str, imported), "--configfile", "config/smoke.yaml", str(extra),
                     "--config", f"results={results}", f"data_dir={DATA}")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "rule train" not in run.stdout + run.stderr
    for backbone, drafter in zip(exports, imported):
        trained = load_file(str(results / "drafters" / "tiny" / backbone / "math" / "drafter" / "drafter.safetensors"))
        back = load_file(str(drafter / "drafter.safetensors"))
        assert trained.keys() == back.keys() and all(torch.equal(trained[k], back[k]) for k in trained)


def test_online_features_multi_gpu_training_and_config_resources_reach_the_jobs(tmp_path):
    """features: online drops feature extraction and hands training the Parquets; gpus > 1 launches torchrun;
    a resources entry replaces a job's declared defaults."""
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["targets"]["tiny"]["features"] = "online"
    config["gpus"] = 2
    config["resources"] = {"train": {"mem_mb": 64000, "runtime": 600}, "evaluate": {"gpus": 1}}
    path = tmp_path / "online.yaml"
    path.write_text(yaml.safe_dump(config))
    run = _snakemake("-n", "-p", "--configfile", str(path), "--config", f"results={tmp_path / 'results'}")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "rule extract_features" not in out and "features/tiny" not in out
    train = [line for line in out.splitlines() if "workflow/scripts/train.py" in line]
    assert train and all(line.startswith("Shell command: torchrun --standalone --nproc_per_node=2 ") for line in train)
    assert all("--data " in line and "--vocab " in line and "--features" not in line for line in train)
    jobs = out.split("\nrule ")
    resources = {job.split(":")[0]: job for job in jobs}
    assert "mem_mb=64000" in resources["train"] and "runtime=600" in resources["train"]
    assert "gpu=2" in resources["train"] and "gpu=2" in resources["regenerate"] and "gpu=0" in resources["average"]
    assert "gpu=1" in resources["evaluate_greedy"]


def _jobs(out):
    """rule name -> number of jobs, from a dry run's job stats table."""
    table = out.split("Job stats:")[1].split("\n\n")[0]
    return {line.split()[0]: int(line.split()[1]) for line in table.splitlines()[3:] if line.strip()}


def test_paper_config_dry_run_with_the_slurm_profile_lists_training_and_the_released_drafters(tmp_path):
    """config/paper.yaml under profiles/slurm: the whole DAG, with the paper's released drafters imported and
    evaluated beside the trained ones; `released` alone evaluates them with nothing trained. The profile is
    used as it is but for `use-conda` (conda cannot be reached here: CI installs with pip)."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile.pop("use-conda") and profile["executor"] == "slurm"
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    args = ["-n", "-p", "--profile", str(tmp_path / "profile"), "--configfile", "config/paper.yaml",
            "--config", f"results={tmp_path / 'paper'}"]
    run = _snakemake(*args)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    jobs = _jobs(out)
    assert jobs["train"] == 8 and jobs["import_drafter"] == 8 and jobs["export_drafter"] == 4
    assert jobs["evaluate_greedy"] == jobs["evaluate_greedy_released"] == 8 and jobs["tables"] == 1
    imports = [line for line in out.splitlines() if "workflow/scripts/import_drafter.py" in line]
    assert any("--source 'zbeeb/Eagle-MathInstruct_20epochs' --backbone eagle2" in line for line in imports)
    assert any("--source 'zbeeb/Hass-MathInstruct_20epochs' --backbone hass" in line for line in imports)
    assert "gpu=1" in out.split("\nrule evaluate_greedy_released:")[1].split("\n\n")[0]
    released = _snakemake("released", *args)
    assert released.returncode == 0, (released.stdout + released.stderr)[-4000:]
    jobs = _jobs(released.stdout + released.stderr)
    assert jobs["import_drafter"] == 8 and jobs["evaluate_greedy_released"] == 8
    assert not {"train", "extract_features", "prepare_data", "average", "evaluate_greedy"} & set(jobs)


def test_an_unknown_drafter_or_an_export_without_eagle_architecture_is_refused_and_named(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["evaluate"]["compositions"]["ghost"] = {"composition": "single", "drafters": ["ghostly"]}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    run = _snakemake("-n", "--configfile", str(bad))
    assert run.returncode != 0 and "['ghostly'] are named for target 'tiny'" in run.stdout + run.stderr
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    del config["train"]["hass"]["architecture"]  # `export: [math]` of a taps-architecture drafter
    bad.write_text(yaml.safe_dump(config))
    run = _snakemake("-n", "--configfile", str(bad))
    assert run.returncode != 0 and "export names ['math'], trained with train.hass.architecture 'taps'" in (
        run.stdout + run.stderr)
