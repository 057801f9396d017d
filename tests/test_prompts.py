"""Prompt formats: few-shot rendering drawn by hand, exemplar choice, the few-shot file, and evaluation with it."""

import pytest
import torch

from taps import EagleProposer, TreeConfig, vanilla_generate
from taps.benchmarks import Prompt, build_turn_prompt
from taps.data import encode_text, format_conversation
from taps.evaluate import EvalConfig, evaluate, reference_rows
from taps.generate import USER_TURN_STOP, StopStrings
from taps.prompts import (
    MAX_EXEMPLAR_CHARS, MIN_EXEMPLAR_CHARS, FewShotFile, PromptFormat, choose_exemplars, first_exchange, load_format,
    plain_format,
)
from taps.tiny import train_tokenizer
from test_answers import build_target, gsm8k_like, pick_stop
from conftest import echo_drafter

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SHOTS = (("What is one plus one?", "Two."), ("Name a fruit.", "An apple."))
CONVERSATION = [("system", "Be brief."), ("user", "Hi there"), ("assistant", "Hello."), ("user", "Bye"),
                ("assistant", "Goodbye.")]


@pytest.fixture(scope="module")
def tok():
    texts = [t for c in gsm8k_like(40, seed=0) for _, t in c] + [q + a for q, a in SHOTS]
    return train_tokenizer(texts, 300)


@pytest.fixture(scope="module")
def chat_tok():
    tokenizer = train_tokenizer([t for c in gsm8k_like(40, seed=0) for _, t in c], 300)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def test_render_puts_the_exemplars_first_and_trains_only_the_conversations_replies(tok):
    fmt = PromptFormat(SHOTS, USER_TURN_STOP)
    text, spans, context = fmt.render(tok, CONVERSATION)
    prefix = ("<bos>System: Be brief.\n\n"
              "User: What is one plus one?\n\nAssistant: Two.\n\n"
              "User: Name a fruit.\n\nAssistant: An apple.\n\n")
    assert text == prefix + "User: Hi there\n\nAssistant: Hello.\n\nUser: Bye\n\nAssistant: Goodbye.\n\n"
    assert context == len(prefix)
    assert [text[a:b] for a, b in spans] == [" Hello.\n\n", " Goodbye.\n\n"]  # no exemplar reply
    text, spans, context = fmt.render(tok, CONVERSATION[1:4], add_generation_prompt=True)
    assert text == (prefix.replace("System: Be brief.\n\n", "")
                    + "User: Hi there\n\nAssistant: Hello.\n\nUser: Bye\n\nAssistant:")
    assert context == len(prefix) - len("System: Be brief.\n\n") and [text[a:b] for a, b in spans] == [" Hello.\n\n"]
    # tokens: the context is exactly the prefix's tokens, and none of them is trained
    ids, mask, n = encode_text(tok, text, spans, context, 10**9)
    assert tok.decode(ids[:n]) == text[:context] and not any(mask[:n])
    assert tok.decode([t for t, m in zip(ids, mask) if m]) == " Hello.\n\n"


def test_without_exemplars_render_is_the_plain_conversation(tok):
    text, spans, context = PromptFormat().render(tok, CONVERSATION)
    assert (text, spans, context) == (*format_conversation(tok, CONVERSATION), 0)
    assert build_turn_prompt(tok, [("Hi there", "Hello.")], "Bye", PromptFormat(SHOTS)) == PromptFormat(SHOTS).render(
        tok, CONVERSATION[1:4], True)[0]


def test_a_chat_template_gets_no_exemplars_and_no_stop(tok, chat_tok):
    assert plain_format(tok, SHOTS) == PromptFormat(SHOTS, USER_TURN_STOP)
    assert plain_format(tok, []) == PromptFormat((), USER_TURN_STOP)
    assert plain_format(chat_tok, SHOTS) == PromptFormat()
    text, _, context = plain_format(chat_tok, SHOTS).render(chat_tok, CONVERSATION)
    assert context == 0 and "fruit" not in text and text.startswith("<bos><|system|>Be brief.<|end|>")


def test_answer_is_cut_before_the_stop_and_stripped(tok):
    ids = tok(" Four apples.\n\nUser: and more", add_special_tokens=False).input_ids
    assert PromptFormat(SHOTS, USER_TURN_STOP).answer(tok, ids) == "Four apples."
    assert PromptFormat(SHOTS).answer(tok, ids) == " Four apples.\n\nUser: and more"
    assert PromptFormat((), USER_TURN_STOP).answer(tok, ids + [tok.eos_token_id]) == "Four apples."


def _qa(question_chars: int, answer: str = "A" * 20) -> list:
    return [("user", "Q" * (question_chars - len(answer))), ("assistant", answer)]


def test_choose_exemplars_is_seeded_and_takes_only_short_english_exchanges():
    fits = [_qa(MIN_EXEMPLAR_CHARS), _qa(MAX_EXEMPLAR_CHARS), _qa(100, "é" * 2 + "a" * 18),  # 98% ASCII
            [("system", "S" * 900), *_qa(60)]]  # the system turn is not part of the exemplar
    misfits = [_qa(MIN_EXEMPLAR_CHARS - 1), _qa(MAX_EXEMPLAR_CHARS + 1), _qa(100, "é" * 3 + "a" * 17)]
    conversations = [fits[0], misfits[0], fits[1], misfits[1], fits[2], misfits[2], fits[3]]
    conversations += [_qa(50 + i) for i in range(20)]
    usable = set(range(0, 8, 2)) | set(range(7, 27))
    assert set(choose_exemplars(conversations, len(usable), 0, "math")) == usable
    with pytest.raises(ValueError, match=f"only {len(usable)} of its conversations .* {len(usable) + 1} wanted"):
        choose_exemplars(conversations, len(usable) + 1, 0, "math")
    three = choose_exemplars(conversations, 3, 0, "math")
    assert three == choose_exemplars(conversations, 3, 0, "math") and set(three) <= usable and len(set(three)) == 3
    assert len({tuple(choose_exemplars(conversations, 3, seed, "math")) for seed in range(4)}) > 1
    assert len({tuple(choose_exemplars(conversations, 3, 0, name)) for name in ("math", "chat", "code")}) > 1
    assert first_exchange(conversations[6]) == ("Q" * 40, "A" * 20)


def test_few_shot_file_round_trip_and_missing_file(tok, chat_tok, tmp_path):
    path = str(tmp_path / "prompts" / "t" / "math.json")
    FewShotFile("math", [4, 1], list(SHOTS)).write(path)
    back = FewShotFile.read(path)
    assert back == FewShotFile("math", [4, 1], list(SHOTS)) and isinstance(back.exemplars[0], tuple)
    assert sorted(p.name for p in (tmp_path / "prompts" / "t").iterdir()) == ["math.json"]
    assert load_format(tok, path) == PromptFormat(SHOTS, USER_TURN_STOP)
    assert load_format(tok, None) == PromptFormat((), USER_TURN_STOP)
    assert load_format(chat_tok, path) == PromptFormat()
    with pytest.raises(FileNotFoundError, match="no few-shot exemplars at .*absent.json.*fewshot"):
        load_format(tok, str(tmp_path / "absent.json"))


def test_evaluation_prompts_hold_the_exemplars_and_replay_matches_with_stop_strings(tmp_path):
    target = build_target(str(tmp_path / "target"))
    tok = target.tokenizer
    conversations = gsm8k_like(6, seed=3)
    prompts = [Prompt("custom", "a", (conversations[3][0][1],)),
               Prompt("custom", "b", (conversations[4][0][1], "And how many pens?"))]
    shots = tuple(first_exchange(c) for c in conversations[:2])
    config = EvalConfig(max_new_tokens=12)
    free = reference_rows(target, prompts, config, progress=False, fmt=PromptFormat(shots))
    fmt = PromptFormat(shots, (pick_stop(tok, [r["tokens"] for r in free]),))
    stop = StopStrings(tok, fmt.stop)
    references = reference_rows(target, prompts, config, progress=False, fmt=fmt)
    prefix, _ = format_conversation(tok, fmt.turns([])[0])
    for r in references:
        assert tok.decode(r["prompt_ids"]).startswith(prefix) and shots[1][1] in prefix
        assert r["tokens"] == vanilla_generate(target, torch.tensor(r["prompt_ids"]), 12, stop=stop).tokens
    assert any(stop.find(r["tokens"]) == len(r["tokens"]) for r in references)  # a stop string ended a turn
    assert fmt.answer(tok, references[1]["tokens"]) in tok.decode(references[2]["prompt_ids"])[len(prefix):]
    proposer = EagleProposer(echo_drafter(target), TreeConfig(total_tokens=8, depth=3, top_k=2))
    rows = evaluate(target, proposer, prompts, EvalConfig(max_new_tokens=12, replay=True, timed_prompts=1),
                    references=references, progress=False, fmt=fmt)
    assert [(t["mode"], t["identical"], t["replay_matches"]) for t in rows.turns] == [
        ("engine", True, True), ("replay", None, None), ("replay", None, None)]
    assert [t["new_tokens"] for t in rows.turns] == [len(r["tokens"]) - 1 for r in references]
    engine = evaluate(target, proposer, prompts, config, progress=False, fmt=fmt)
    assert [t["new_tokens"] for t in engine.turns] == [len(r["tokens"]) - 1 for r in references]
    assert all(t["identical"] for t in engine.turns)


def test_shared_prefix_cache_leaves_every_output_unchanged(tmp_path, monkeypatch):
    """The exemplars' KV cache, run once and reused by every prefill and replay pass, gives the same tokens,
    cycles and drafted nodes as running each prompt whole: at T=0 (engine and replay) and at T=1 (same seed)."""
    import taps.generate
    from taps.evaluate import evaluate_many, shared_prefix
    target = build_target(str(tmp_path / "target"))
    tok = target.tokenizer
    conversations = gsm8k_like(8, seed=5)
    prompts = [Prompt("custom", "a", (conversations[3][0][1],)),
               Prompt("custom", "b", (conversations[4][0][1], "And how many pens?")),
               Prompt("custom", "c", (conversations[5][0][1],))]
    fmt = PromptFormat(tuple(first_exchange(c) for c in conversations[:2]), USER_TURN_STOP)
    prefix = shared_prefix(target, fmt)
    assert len(prefix.ids) > 20 and shared_prefix(target, fmt, enabled=False) is None
    assert shared_prefix(target, PromptFormat()) is None  # no exemplars, nothing shared
    reused = []
    monkeypatch.setattr(taps.generate.SharedPrefix, "run", lambda self, *a, _run=taps.generate.SharedPrefix.run:
                        reused.append(1) or _run(self, *a))
    committed = []
    monkeypatch.setattr(taps.generate.SharedPrefix, "commit", lambda self, p, _commit=taps.generate.SharedPrefix.commit:
                        committed.append(p in self.drafted) or _commit(self, p))
    proposer = EagleProposer(echo_drafter(target), TreeConfig(total_tokens=8, depth=3, top_k=2))
    strip = lambda rows: {k: [{c: v for c, v in r.items() if "seconds" not in c} for r in getattr(rows, k)]  # noqa: E731
                          for k in ("cycles", "nodes", "turns")}
    for temperature, replay in ((0.0, True), (0.0, False), (1.0, False)):
        runs = []
        for cached in (True, False):
            config = EvalConfig(temperature, 12, seed=4, replay=replay, timed_prompts=2, prefix_cache=cached)
            refs = reference_rows(target, prompts, EvalConfig(0.0, 12, seed=4, prefix_cache=cached), False, fmt)
            refs_tokens = [(r["prompt_ids"], r["tokens"]) for r in refs]
            runs.append((refs_tokens, strip(evaluate_many(target, {"p": proposer}, prompts, config, refs, False, fmt)["p"])))
        assert runs[0] == runs[1], (temperature, replay)
    assert reused  # the cached runs did go through the shared prefix
    assert committed.count(False) == 3 and committed.count(True) > 3  # the drafter's prefix: once per run, then restored
