"""Every reader of a workflow intermediate turns a truncated, empty or missing file into one error that
names the file and the rule to rerun (taps.intermediates); its own checks pass through unchanged."""

import json
import os
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from taps.aggregate import read_evaluation
from taps.average import average_drafters
from taps.drafter import META as DRAFTER_META, WEIGHTS, Drafter
from taps.evaluate import REFERENCE_COLUMNS, read_references, write_references
from taps.features import extract_features
from taps.rows import read_rows
from taps.shards import META, SHARD_NAME, FeatureShards
from taps.vocab import VOCAB, load_vocab, write_vocab
from taps.intermediates import CorruptIntermediate, MissingIntermediate, read_json, read_parquet, reading
from taps.prompts import FewShotFile
from taps.target import write_target_spec


def _data(path):
    gen = torch.Generator().manual_seed(0)
    ids = [torch.randint(0, 64, (n,), generator=gen).tolist() for n in (5, 7, 4)]
    pq.write_table(pa.table({"input_ids": pa.array(ids, type=pa.list_(pa.int32())),
                             "loss_mask": pa.array([[0] + [1] * (len(i) - 1) for i in ids], type=pa.list_(pa.int8())),
                             "source": ["math"] * len(ids)}), path)
    return path


def _features(target, tmp_path):
    out = tmp_path / "features"
    extract_features(target, _data(tmp_path / "data.parquet"), out, shard_tokens=8, progress=False)
    return out


# Each builder writes a valid intermediate and returns (the file to damage, a call of the project's reader).

def training_data(target, tmp_path):
    path = _data(tmp_path / "data.parquet")
    return path, lambda: list(read_rows(path))


def feature_file(name):
    def build(target, tmp_path):
        out = _features(target, tmp_path)
        return out / name, lambda: (FeatureShards(out), load_vocab(out))
    return build


def draft_vocabulary(target, tmp_path):
    path = tmp_path / "vocab.safetensors"
    write_vocab([str(_data(tmp_path / "data.parquet"))], target.vocab_size, 8, str(path))
    return path, lambda: load_vocab(path)


def drafter_file(name):
    def build(target, tmp_path):
        Drafter(target).save(str(tmp_path / "d"))
        return tmp_path / "d" / name, lambda: Drafter.load(str(tmp_path / "d"), target)
    return build


def averaged_member(target, tmp_path):
    members = [str(tmp_path / m) for m in "ab"]
    for m in members:
        Drafter(target).save(m)
    return tmp_path / "b" / WEIGHTS, lambda: average_drafters(members, target)


def evaluation_file(name):
    def build(target, tmp_path):
        out = tmp_path / "eval"
        out.mkdir()
        pd.DataFrame([{"prompt": "a", "turn": 0, "new_tokens": 3, "passes": 2}]).to_parquet(out / "turns.parquet")
        (out / "config.json").write_text(json.dumps({"composition": {"composition": "single"}, "tree": {"depth": 2}}))
        return out / name, lambda: read_evaluation(str(out))
    return build


def references(target, tmp_path):
    path = str(tmp_path / "references.parquet")
    write_references([dict(zip(REFERENCE_COLUMNS, ("gsm8k", "a", 0, [1, 2], [3, 4], 0.1)))], path)
    return tmp_path / "references.parquet", lambda: read_references(path)


def fewshot(target, tmp_path):
    path = str(tmp_path / "fewshot.json")
    FewShotFile("math", [0], [("q", "a")]).write(path)
    return tmp_path / "fewshot.json", lambda: FewShotFile.read(path)


def target_spec(target, tmp_path):
    path = str(tmp_path / "target.json")
    write_target_spec(target, "tiny", False, path)
    return tmp_path / "target.json", lambda: read_json(path, "target spec")  # as workflow/scripts/draft_vocab.py


def table(target, tmp_path):
    path = tmp_path / "evaluations.parquet"
    pd.DataFrame({"tau": [1.5]}).to_parquet(path)
    return path, lambda: read_parquet(path, "table")  # as workflow/scripts/tables.py, figures.py, findings.py


KINDS = {  # kind -> (builder, the rule the error must name)
    "training data": (training_data, "prepare_data"),
    "feature shard": (feature_file(SHARD_NAME.format(1)), "extract_features"),
    "feature metadata": (feature_file(META), "extract_features"),
    "feature vocabulary": (feature_file(VOCAB), "extract_features"),
    "draft vocabulary": (draft_vocabulary, "draft_vocab"),
    "drafter weights": (drafter_file(WEIGHTS), "train"),
    "drafter metadata": (drafter_file(DRAFTER_META), "train"),
    "averaged member": (averaged_member, "train"),
    "evaluation rows": (evaluation_file("turns.parquet"), "evaluate_greedy"),
    "evaluation config": (evaluation_file("config.json"), "evaluate_greedy"),
    "references": (references, "reference"),
    "few-shot exemplars": (fewshot, "fewshot"),
    "target spec": (target_spec, "--forcerun target"),
    "table": (table, "--forcerun aggregate"),
}
DAMAGE = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:path.stat().st_size // 2]),
    "empty": lambda path: path.write_bytes(b""),
    "missing": os.remove,
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_intermediate_is_one_error_naming_the_file_and_its_rule(kind, damage, target, tmp_path):
    build, rule = KINDS[kind]
    path, read = build(target, tmp_path)
    read()
    DAMAGE[damage](path)
    with pytest.raises(MissingIntermediate if damage == "missing" else CorruptIntermediate) as err:
        read()
    message = str(err.value)
    assert str(path) in message and "--forcerun" in message and rule in message, message


def test_errors_other_than_reading_pass_through_unchanged(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{}")
    with pytest.raises(KeyError), reading(path, "target spec"):
        json.loads(path.read_text())["fingerprint"]
    pq.write_table(pa.table({"x": [1]}), tmp_path / "d.parquet")  # readable, but not training data
    with pytest.raises(ValueError, match="lacks columns") as err:
        list(read_rows(tmp_path / "d.parquet"))
    assert not isinstance(err.value, CorruptIntermediate)


def test_a_file_inside_an_output_directory_names_the_directory_to_delete(target, tmp_path):
    out = _features(target, tmp_path)
    (out / SHARD_NAME.format(0)).write_bytes(b"")
    with pytest.raises(CorruptIntermediate, match=re.escape(f"delete {out}, or rerun")):
        FeatureShards(out)
