"""Config fuzzing (benchmarks/config_fuzz.py): broken configs plan cleanly or are refused by one message
naming the key, never with a traceback, before any job runs."""

import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import yaml

from taps.benchmarks import BUILTIN

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("config_fuzz", ROOT / "benchmarks" / "config_fuzz.py")
fuzz = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(fuzz)


def test_two_hundred_seeded_mutations_of_the_default_config_end_in_a_plan_or_a_named_refusal():
    """N = 200 seeded mutations, 25 of each kind; the printed table is the README's reliability figure."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "config_fuzz.py"), "--n", "200", "--seed", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    print(run.stdout[-3000:])
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    table = run.stdout.splitlines()
    assert "N = 200 mutations" in table
    header = next(line for line in table if line.startswith("kind"))
    totals = dict(zip(header.split()[1:], map(int, table[-1].split()[1:])))
    assert totals["traceback"] == totals["unnamed"] == totals["unrefused"] == totals["skipped"] == 0
    assert totals["refused"] >= 150  # most mutations are invalid by construction


def test_mutations_are_seeded_and_each_changes_the_config():
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for i in range(40):
        kind = fuzz.KINDS[i % len(fuzz.KINDS)]
        one = fuzz.mutate(base, kind, random.Random(f"0:{i}"))
        again = fuzz.mutate(base, kind, random.Random(f"0:{i}"))
        assert one[1] == again[1] and one[2] == again[2]
        path, _, cfg = one
        assert cfg != base, (kind, path)
        assert fuzz.key_name(path) in yaml.safe_dump(cfg)  # the key a refusal must name is in the config


def test_the_classifier_calls_a_message_without_the_key_or_with_a_traceback_a_defect():
    path = ("train", "eagle2", "epochs")
    schema = "WorkflowError: Error validating config file. ... On instance['train']['eagle2']['epochs']"
    assert fuzz.classify("negative", path, "WorkflowError", schema) == "refused"
    assert fuzz.classify("negative", path, "ValueError", "ValueError: train.eagle2.epochs must be") == "refused"
    assert fuzz.classify("negative", path, "KeyError", "KeyError: 'epochs'") == "traceback"  # names it, yet a crash
    assert fuzz.classify("negative", path, "ValueError", "ValueError: lr must be positive") == "unnamed"
    assert fuzz.classify("negative", path, "WorkflowError", "epochs\nTraceback (most recent call last):") == "traceback"
    assert fuzz.classify("negative", path, "plans", "") == "unrefused"
    assert fuzz.classify("zero", path, "plans", "") == "plans"


def test_the_schema_allows_null_for_exactly_the_built_in_benchmarks():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    benchmarks = schema["properties"]["evaluate"]["properties"]["benchmarks"]
    assert set(benchmarks["properties"]) == set(BUILTIN)
    assert benchmarks["additionalProperties"]["type"] == "object"  # any other name needs a spec
