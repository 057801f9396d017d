"""Tests of taps.benchmarks on the shared benchmark files and small files written here: no model."""

import hashlib
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from taps.benchmarks import (
    BUILTIN, SPEC_KEYS, Benchmark, Prompt, benchmark_from_config, build_turn_prompt, load_prompts,
)

# Records per built-in benchmark file (data/README.md) and user turns per record.
EXPECTED = {"mt_bench": (80, 2), "gsm8k": (1319, 1), "math500": (500, 1), "svamp": (1000, 1)}
DATA = Path(__file__).resolve().parents[1] / "data"  # shipped with the project


@pytest.fixture(scope="module")
def data_dir() -> Path:
    return DATA


def test_every_shipped_data_file_matches_the_checksum_its_readme_gives():
    readme = (DATA / "README.md").read_text()
    files = sorted(DATA.glob("*.jsonl"))
    assert {f.name for f in files} >= {"gsm8k_test.jsonl", "gsm8k_train.jsonl", "math500.jsonl", "mt_bench.jsonl",
                                       "svamp.jsonl"}
    for f in files:
        assert f"`{hashlib.sha256(f.read_bytes()).hexdigest()}`" in readme, f.name


@pytest.fixture
def custom_file(tmp_path) -> Path:
    """Five records with a question, a context and a name; the third has no id field."""
    records = [{"q": f"question {k}?", "ctx": f"context {k}.", "name": f"r{k}"} for k in range(5)]
    del records[2]["name"]
    (tmp_path / "custom.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return tmp_path / "custom.jsonl"


# ---------------------------------------------------------------- built-in benchmarks


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_loads_every_record_with_nonempty_turns(data_dir, name):
    records, turns = EXPECTED[name]
    prompts = load_prompts(benchmark_from_config(name, None), data_dir)
    assert len(prompts) == records
    assert all(p.benchmark == name and len(p.turns) == turns for p in prompts)
    assert all(turn.strip() for p in prompts for turn in p.turns)
    assert len({p.id for p in prompts}) == records


def test_builtin_ids_come_from_the_id_field_or_the_line_number(data_dir):
    first = {name: load_prompts(BUILTIN[name], data_dir, limit=2) for name in EXPECTED}
    assert [p.id for p in first["mt_bench"]] == ["81", "82"]
    assert [p.id for p in first["gsm8k"]] == ["1", "2"]
    assert first["math500"][0].id == "test/precalculus/807.json"
    assert [p.id for p in first["svamp"]] == ["chal-1", "chal-2"]


def test_svamp_joins_body_and_question_with_one_space(data_dir):
    line = (data_dir / "svamp.jsonl").read_text(encoding="utf-8").splitlines()[0]
    record = json.loads(line)
    (prompt,) = load_prompts(BUILTIN["svamp"], data_dir, limit=1)
    assert prompt.turns == (record["Body"] + " " + record["Question"],)
    assert prompt.turns[0].startswith("Each pack of dvds costs 76 dollars.")


# ---------------------------------------------------------------- benchmarks from config


def test_a_spec_defines_a_benchmark_without_code(custom_file):
    spec = {"path": custom_file.name, "prompt_fields": ["ctx", "q"]}
    bench = benchmark_from_config("mine", spec)
    prompts = load_prompts(bench, custom_file.parent)
    assert prompts[0] == Prompt("mine", "1", ("context 0. question 0?",))
    assert [p.id for p in prompts] == ["1", "2", "3", "4", "5"]


def test_a_spec_with_turns_field_gives_multi_turn_prompts(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"id": 7, "turns": ["hi", "and then?"]}) + "\n\n", encoding="utf-8")
    bench = benchmark_from_config("chat", {"path": str(path), "turns_field": "turns", "id_field": "id"})
    assert load_prompts(bench, None) == [Prompt("chat", "7", ("hi", "and then?"))]


def test_benchmark_needs_exactly_one_of_turns_field_and_prompt_fields():
    for kwargs in ({}, {"turns_field": "turns", "prompt_fields": ["q"]}, {"prompt_fields": []}):
        with pytest.raises(ValueError, match="exactly one of `turns_field`.*`prompt_fields`"):
            Benchmark("bad", "bad.jsonl", **kwargs)
    assert Benchmark("one", "x.jsonl", prompt_fields="q").prompt_fields == ("q",)


def test_unknown_spec_key_is_named_with_the_known_keys(custom_file):
    with pytest.raises(ValueError, match="unknown key 'prompt_field'") as err:
        benchmark_from_config("mine", {"path": str(custom_file), "prompt_field": ["q"]})
    assert all(key in str(err.value) for key in SPEC_KEYS)


def test_spec_without_path_says_so():
    with pytest.raises(ValueError, match="needs a `path`"):
        benchmark_from_config("mine", {"prompt_fields": ["q"]})


def test_unknown_builtin_name_lists_the_builtins():
    with pytest.raises(ValueError, match="unknown benchmark 'humaneval'") as err:
        benchmark_from_config("humaneval", None)
    assert all(name in str(err.value) for name in BUILTIN)


# ---------------------------------------------------------------- limits and sampling


def test_limit_without_seed_takes_the_first_records(custom_file):
    bench = Benchmark("mine", str(custom_file), prompt_fields=("q",))
    assert [p.turns[0] for p in load_prompts(bench, None, limit=2)] == ["question 0?", "question 1?"]
    assert len(load_prompts(bench, None, limit=50)) == 5


def test_seeded_sample_is_deterministic_in_file_order_and_differs_across_seeds(data_dir):
    def ids(seed):
        return [int(p.id) for p in load_prompts(BUILTIN["gsm8k"], data_dir, limit=20, seed=seed)]

    first, again, other = ids(0), ids(0), ids(1)
    assert first == again
    assert first == sorted(first) and len(set(first)) == 20
    assert first != other
    assert first != list(range(1, 21))


@pytest.mark.parametrize("name", ["mt_bench", "gsm8k", "math500", "svamp"])
def test_seeded_samples_are_nested_so_t1_prompts_are_among_t0s(data_dir, name):
    ids = {n: [p.id for p in load_prompts(BUILTIN[name], data_dir, limit=n, seed=0)] for n in (5, 10, 20)}
    assert len(ids[20]) == 20 and set(ids[5]) < set(ids[10]) < set(ids[20])


def test_seeded_sample_larger_than_the_file_takes_all_records(custom_file):
    bench = Benchmark("mine", str(custom_file), prompt_fields=("q",))
    assert load_prompts(bench, None, limit=10, seed=3) == load_prompts(bench, None)


def test_limit_must_be_positive(custom_file):
    with pytest.raises(ValueError, match="limit must be positive"):
        load_prompts(Benchmark("mine", str(custom_file), prompt_fields=("q",)), None, limit=0)


# ---------------------------------------------------------------- file and record errors


def test_missing_file_names_the_file_the_benchmark_and_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_prompts(BUILTIN["gsm8k"], tmp_path)
    message = str(err.value)
    assert str(tmp_path / "gsm8k_test.jsonl") in message and "'gsm8k'" in message and "data_dir" in message


def test_record_missing_a_field_names_file_line_and_field(custom_file):
    bench = Benchmark("mine", custom_file.name, prompt_fields=("q",), id_field="name")
    with pytest.raises(ValueError, match=r"custom\.jsonl:3: record lacks field 'name'"):
        load_prompts(bench, custom_file.parent)


def test_malformed_records_are_reported_with_their_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"turns": ["ok"]}\n{"turns": "not a list"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: field 'turns' must be a non-empty list"):
        load_prompts(Benchmark("bad", str(path), turns_field="turns"), None)
    path.write_text('{"turns": ["ok"]}\n{"turns": [\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not a JSON object"):
        load_prompts(Benchmark("bad", str(path), turns_field="turns"), None)


def test_repeated_ids_are_refused(custom_file):
    bench = Benchmark("mine", str(custom_file), prompt_fields=("q",), id_field="ctx")
    assert len(load_prompts(bench, None)) == 5
    custom_file.write_text(custom_file.read_text(encoding="utf-8") * 2, encoding="utf-8")
    with pytest.raises(ValueError, match="id 'context 0.' occurs more than once"):
        load_prompts(bench, None)


# ---------------------------------------------------------------- rendering a turn


def plain_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with a BOS token and no chat template: taps.data's plain template applies."""
    vocab = {"<bos>": 0, "<eos>": 1, "<unk>": 2}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                        bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")
    assert not tokenizer.chat_template
    return tokenizer


def test_turn_prompt_renders_the_history_in_the_plain_template():
    tokenizer = plain_tokenizer()
    history = [("Write a poem.", "Roses are red."), ("Shorter.", "Red.")]
    assert build_turn_prompt(tokenizer, history, "Now in French.") == (
        "<bos>User: Write a poem.\n\nAssistant: Roses are red.\n\n"
        "User: Shorter.\n\nAssistant: Red.\n\n"
        "User: Now in French.\n\nAssistant:"
    )
    assert build_turn_prompt(tokenizer, [], "Hi.") == "<bos>User: Hi.\n\nAssistant:"


def test_a_hub_benchmark_reads_through_datasets_from_a_local_stand_in(tmp_path):
    """kind: hub loads with datasets.load_dataset; a local dataset directory stands in for the hub."""
    hub = tmp_path / "org-bench"
    hub.mkdir()
    rows = [{"q": f"What is {i} + {i}?", "idx": f"x{i}"} for i in range(6)]
    (hub / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = benchmark_from_config("mine", {"kind": "hub", "hub_id": str(hub), "split": "test",
                                           "prompt_fields": ["q"], "id_field": "idx"})
    prompts = load_prompts(bench, data_dir=None, limit=3)
    assert [(p.id, p.turns) for p in prompts] == [(f"x{i}", (f"What is {i} + {i}?",)) for i in range(3)]
    assert load_prompts(bench, None, limit=3, seed=1) == load_prompts(bench, None, limit=3, seed=1)
    with pytest.raises(RuntimeError, match="cannot load .* split 'validation'"):
        load_prompts(benchmark_from_config("mine", {"kind": "hub", "hub_id": str(hub), "split": "validation",
                                                    "prompt_fields": ["q"]}), None)
    with pytest.raises(ValueError, match="kind 'hub' a `hub_id`"):
        benchmark_from_config("mine", {"kind": "hub", "prompt_fields": ["q"]})
