"""Training rows per source: batched regeneration equals the vanilla loop, stop rules, provenance, turns, select.

The target is a tiny random Llama with a byte-level BPE tokenizer trained on GSM8K-like text made
here (no data file). Its greedy output is random-looking text, so the stop string is picked from
that output: one that ends some answers and not others, so no test passes without a stop firing.
"""

import json
import random

import pyarrow.parquet as pq
import pytest
import torch

from taps.answers import METADATA_KEY, AnswerConfig, generate_batch, prepare_source, select, target_rows
from taps.data import encode_text, format_conversation, source_order
from taps.generate import StopStrings, vanilla_generate
from taps.prompts import PromptFormat, choose_exemplars, first_exchange
from taps.target import load_target
from taps.tiny import TinyTargetConfig, build_tiny_target

NAMES = ["Tom", "Ann", "Maya", "Omar", "Lena", "Raj"]
ITEMS = ["apples", "pens", "books", "eggs", "coins"]
NEW = 16  # max_new_tokens of every generation here


def gsm8k_like(n: int, seed: int) -> list:
    """n one-exchange conversations in GSM8K's form (question; worked answer with <<>> notes and ####)."""
    rng, out = random.Random(seed), []
    for i in range(n):
        a, b, who, what = rng.randint(2, 60), rng.randint(2, 60), rng.choice(NAMES), rng.choice(ITEMS)
        extra = " She gives none away." * (i % 3)  # questions of different lengths: left padding matters
        out.append([("user", f"{who} has {a} {what} and buys {b} more.{extra} How many {what} are there now?"),
                    ("assistant", f"{who} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {what}.\n#### {a + b}")])
    return out


def build_target(directory: str):
    """A tiny tokenized target: tokenizer trained on ~200 GSM8K-like texts, random 2-layer Llama."""
    texts = [text for conversation in gsm8k_like(100, seed=0) for _, text in conversation]
    build_tiny_target(texts, directory, TinyTargetConfig(vocab_size=300))
    return load_target(directory, device="cpu")


def prompt_ids(tokenizer, fmt: PromptFormat, turns) -> list[int]:
    text, _, _ = fmt.render(tokenizer, turns, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False).input_ids


def pick_stop(tokenizer, outputs: list[list[int]]) -> str:
    """A two-character ASCII string found in the most outputs, but not in all (so some rows run to length)."""
    rows = [tokenizer.decode(tokens) for tokens in outputs]
    seen = {text[i: i + 2] for text in rows for i in range(1, len(text) - 1)}  # not at the very start
    candidates = [s for s in seen if s.isascii() and s.isprintable() and 0 < sum(s in r for r in rows) < len(rows)]
    assert candidates, "the tiny target's outputs hold no two-character string that some of them lack"
    return max(sorted(candidates), key=lambda s: sum(s in r for r in rows))


def assert_finish(tokenizer, tokens: list[int], finish: str, stop: StopStrings | None, eos: set[int]) -> None:
    """The answer ends exactly where its finish reason says: just after EOS, the stop string, or at NEW."""
    def has_stop(ts):
        return stop is not None and any(s in tokenizer.decode(ts) for s in stop.strings)

    assert not any(t in eos for t in tokens[:-1]) and not has_stop(tokens[:-1])
    if finish == "eos":
        assert tokens[-1] in eos
    elif finish == "stop":
        assert has_stop(tokens) and tokens[-1] not in eos
    else:
        assert finish == "length" and len(tokens) == NEW and tokens[-1] not in eos and not has_stop(tokens)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(target, conversations, exemplar indices, few-shot format whose stop string fires in some answers)."""
    target = build_target(str(tmp_path_factory.mktemp("tiny") / "target"))
    conversations = gsm8k_like(14, seed=1)
    chosen = choose_exemplars(conversations, 2, seed=0, name="math")
    exemplars = tuple(first_exchange(conversations[i]) for i in chosen)
    rows = select("math", conversations, 6, 0, chosen)
    free = generate_batch(target, [prompt_ids(target.tokenizer, PromptFormat(exemplars), c[:1]) for c in rows], NEW)
    return target, conversations, chosen, PromptFormat(exemplars, (pick_stop(target.tokenizer, [t for t, _ in free]),))


# ---------------------------------------------------------------- batched generation


def test_batched_generation_equals_the_vanilla_loop_token_for_token(tiny, monkeypatch):
    target, conversations, chosen, fmt = tiny
    tok = target.tokenizer
    prompts = [prompt_ids(tok, fmt, c[:1]) for c in select("math", conversations, 6, 0, chosen)]
    assert len({len(p) for p in prompts}) > 2  # padding is exercised
    stop = StopStrings(tok, fmt.stop)
    free = generate_batch(target, prompts, NEW)
    for prompt, (tokens, finish) in zip(prompts, free):
        vanilla = vanilla_generate(target, torch.tensor(prompt), NEW)
        assert tokens == vanilla.tokens and finish == vanilla.stopped
    stopped = generate_batch(target, prompts, NEW, stop=stop)
    for prompt, (tokens, finish), (whole, _) in zip(prompts, stopped, free):
        vanilla = vanilla_generate(target, torch.tensor(prompt), NEW, stop=stop)
        assert tokens == vanilla.tokens and finish == vanilla.stopped
        assert tokens == whole[:len(tokens)]  # a stop only cuts the same greedy output
        assert_finish(tok, tokens, finish, stop, target.eos_token_ids)
    finishes = [f for _, f in stopped]
    assert "stop" in finishes and "length" in finishes, finishes

    # EOS: a token that some free answers hold and others do not becomes the EOS
    eos = next(t for tokens, _ in free for t in tokens[1:] if sum(t in ts for ts, _ in free) < len(free))
    monkeypatch.setattr(target.model.generation_config, "eos_token_id", eos)
    assert target.eos_token_ids == {eos}
    ended = generate_batch(target, prompts, NEW, stop=stop)
    for prompt, (tokens, finish) in zip(prompts, ended):
        vanilla = vanilla_generate(target, torch.tensor(prompt), NEW, stop=stop)
        assert tokens == vanilla.tokens and finish == vanilla.stopped
        assert_finish(tok, tokens, finish, stop, {eos})
    assert "eos" in [f for _, f in ended]


def test_sampling_draws_from_the_whole_distribution_and_greedy_ignores_sampling_defaults(tiny, monkeypatch):
    target, conversations, _, fmt = tiny
    prompt = prompt_ids(target.tokenizer, fmt, conversations[0][:1])
    expected = vanilla_generate(target, torch.tensor(prompt), NEW).tokens
    for name, value in (("do_sample", True), ("top_k", 5), ("top_p", 0.2)):  # a checkpoint's sampling defaults
        monkeypatch.setattr(target.model.generation_config, name, value, raising=False)
    assert generate_batch(target, [prompt], NEW)[0][0] == expected
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        draws = generate_batch(target, [prompt] * 300, 1, temperature=50.0)  # near uniform over 300 ids
    assert len({tokens[0] for tokens, _ in draws}) > 100  # no top-k or top-p cut (generate's default top_k is 50)


def test_rows_are_the_same_whatever_the_batch_size_and_equal_the_vanilla_loop(tiny):
    target, conversations, chosen, fmt = tiny
    rows = select("math", conversations, 6, 0, chosen)
    one = target_rows("math", rows, target, fmt, AnswerConfig("target", max_new_tokens=NEW, batch_size=1), False)
    many = target_rows("math", rows, target, fmt, AnswerConfig("target", max_new_tokens=NEW, batch_size=4), False)
    assert one == many and len(one) == 6
    stop = StopStrings(target.tokenizer, fmt.stop)
    for row, conversation in zip(one, rows):
        prompt = prompt_ids(target.tokenizer, fmt, conversation[:1])
        vanilla = vanilla_generate(target, torch.tensor(prompt), NEW, stop=stop)
        assert row["input_ids"] == prompt + vanilla.tokens and row["finish"] == vanilla.stopped


# ---------------------------------------------------------------- provenance


def test_target_rows_carry_their_provenance_and_train_only_the_answer(tiny, tmp_path):
    target, conversations, chosen, fmt = tiny
    tok = target.tokenizer
    config = AnswerConfig("target", max_new_tokens=NEW, batch_size=4)
    summary = prepare_source("math", conversations, 6, 0, tok, fmt, config, tmp_path / "math.parquet",
                             target=target, exclude=chosen, progress=False)
    table = pq.read_table(tmp_path / "math.parquet")
    rows = table.to_pylist()
    selected = select("math", conversations, 6, 0, chosen)
    answers = generate_batch(target, [prompt_ids(tok, fmt, c[:1]) for c in selected], NEW,
                             stop=StopStrings(tok, fmt.stop))
    prefix, _ = format_conversation(tok, fmt.turns(selected[0])[0])
    assert [r["order"] for r in rows] == list(range(6))
    for row, conversation, (tokens, finish) in zip(rows, selected, answers):
        prompt = prompt_ids(tok, fmt, conversation[:1])
        assert (row["writer"], row["source"], row["finish"]) == (target.name, "math", finish)
        assert row["input_ids"] == prompt + tokens
        assert row["loss_mask"] == [0] * len(prompt) + [1] * len(tokens)  # the answer, never an exemplar reply
        assert tok.decode(row["input_ids"][:row["context"]]) == prefix  # context: exactly the exemplar prefix
        assert prefix.endswith(f" {fmt.exemplars[-1][1]}\n\n") and conversation[0][1] not in prefix
        assert not any(q in tok.decode(row["input_ids"][row["context"]:]) for q, _ in fmt.exemplars)
    finishes = [r["finish"] for r in rows]
    assert {"stop", "length"} <= set(finishes)
    assert summary == {"rows": 6, "selected": 6, **{f: finishes.count(f) for f in set(finishes)},
                       "answer_tokens": sum(len(r["input_ids"]) - len(prompt_ids(tok, fmt, c[:1]))
                                            for r, c in zip(rows, selected))}
    settings = json.loads(table.schema.metadata[METADATA_KEY])
    assert settings["writer"] == target.name and settings["responses"] == "target"
    assert (settings["max_new_tokens"], settings["temperature"], settings["batch_size"], settings["turns"]) == (
        NEW, 0.0, 4, "first")
    assert settings["exemplars"] == [list(e) for e in fmt.exemplars] and settings["stop"] == list(fmt.stop)
    assert (settings["exclude"], settings["count"], settings["seed"]) == (chosen, 6, 0)


def test_dataset_rows_keep_the_datasets_answer_and_mask_only_it(tiny, tmp_path):
    target, conversations, chosen, fmt = tiny
    tok = target.tokenizer
    prepare_source("math", conversations, 5, 0, tok, fmt, AnswerConfig(), tmp_path / "d.parquet",
                   exclude=chosen, progress=False)
    table = pq.read_table(tmp_path / "d.parquet")
    prefix, _ = format_conversation(tok, fmt.turns(conversations[0])[0])
    for row, conversation in zip(table.to_pylist(), select("math", conversations, 5, 0, chosen)):
        assert (row["writer"], row["finish"]) == ("dataset", "dataset")
        ids, mask = row["input_ids"], row["loss_mask"]
        assert tok.decode(ids[:row["context"]]) == prefix and not any(mask[:row["context"]])
        assert tok.decode([t for t, m in zip(ids, mask) if m]) == f" {conversation[1][1]}\n\n"
    assert json.loads(table.schema.metadata[METADATA_KEY])["writer"] == "dataset"
    with pytest.raises(ValueError, match="needs the target model"):
        prepare_source("math", conversations, 5, 0, tok, fmt, AnswerConfig("target"), tmp_path / "t.parquet",
                       exclude=chosen, progress=False)


def test_a_row_is_cut_to_max_length_after_the_context(tiny):
    target, conversations, chosen, fmt = tiny
    rows = select("math", conversations, 3, 0, chosen)
    prompt = prompt_ids(target.tokenizer, fmt, rows[0][:1])
    text, spans, chars = fmt.render(target.tokenizer, rows[0][:1], True)
    context = encode_text(target.tokenizer, text, spans, chars, 10**9)[2]
    room = len(prompt) - context + 3  # three answer tokens fit
    [row, *_] = target_rows("math", rows, target, fmt, AnswerConfig("target", max_new_tokens=NEW, max_length=room),
                            False)
    assert len(row["input_ids"]) == context + room and sum(row["loss_mask"]) == 3 and row["context"] == context


# ---------------------------------------------------------------- turns


def test_all_turns_regenerates_the_second_turn_on_the_targets_own_first_answer(tiny):
    target, conversations, _, fmt = tiny
    tok = target.tokenizer
    two = conversations[0] + [("user", "And how many pens?"), ("assistant", "Pens: 7.\n#### 7")]
    chats = [two, conversations[1]]
    first = target_rows("s", chats, target, fmt, AnswerConfig("target", max_new_tokens=NEW), False)
    every = target_rows("s", chats, target, fmt, AnswerConfig("target", "all", max_new_tokens=NEW), False)
    stop = StopStrings(tok, fmt.stop)
    [(answer, _)] = generate_batch(target, [prompt_ids(tok, fmt, two[:1])], NEW, stop=stop)
    assert first[0]["input_ids"] == prompt_ids(tok, fmt, two[:1]) + answer
    assert first[1] == every[1]  # a one-exchange conversation is the same either way
    reply = fmt.answer(tok, answer)
    second = prompt_ids(tok, fmt, [two[0], ("assistant", reply), two[2]])
    [(again, finish)] = generate_batch(target, [second], NEW, stop=stop)
    assert every[0]["input_ids"] == second + again and every[0]["finish"] == finish
    assert f"Assistant: {reply}\n\nUser: And how many pens?" in tok.decode(every[0]["input_ids"])
    assert two[1][1] not in tok.decode(every[0]["input_ids"])  # the dataset's first answer is not used
    # trained: the target's own first answer (as re-tokenised in the prompt) and the second answer
    text, spans, chars = fmt.render(tok, [two[0], ("assistant", reply), two[2]], True)
    _, mask, context = encode_text(tok, text, spans, chars, 10**9)
    assert every[0]["loss_mask"] == mask + [1] * len(again) and every[0]["context"] == context
    assert tok.decode([t for t, m in zip(second, mask) if m]) == f" {reply}\n\n"


# ---------------------------------------------------------------- selection


def test_select_is_seeded_leaves_out_exemplars_and_a_smaller_count_is_a_prefix():
    conversations = [[("user", f"q{i}"), ("assistant", f"a{i}")] for i in range(30)]
    exclude = [3, 17, 25]
    big = select("math", conversations, 20, 7, exclude)
    assert big == select("math", conversations, 20, 7, exclude)
    assert select("math", conversations, 8, 7, exclude) == big[:8]
    assert big != select("math", conversations, 20, 8, exclude) and big != select("chat", conversations, 20, 7,
                                                                                    exclude)
    assert not {conversations[i][0][1] for i in exclude} & {c[0][1] for c in big}
    order = [i for i in source_order("math", 30, 7) if i not in exclude]
    assert big == [conversations[i] for i in order[:20]]
    assert len(select("math", conversations, None, 7, exclude)) == 27
    with pytest.raises(ValueError, match="count 28 is more than the 27 conversations"):
        select("math", conversations, 28, 7, exclude)


@pytest.mark.parametrize("kwargs,match", [({"responses": "model"}, "responses"), ({"turns": "two"}, "turns"),
                                          ({"batch_size": 0}, "batch_size"), ({"temperature": -1.0}, "temperature")])
def test_answer_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AnswerConfig(**kwargs)
