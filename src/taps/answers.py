"""Training data per source: the dataset's own answers, or answers the target writes itself.

At evaluation a drafter must predict the target's continuation, not the dataset's text: GSM8K
answers carry `<<48/2=24>>` calculator notes that no target writes, and a base model answers
in its own way. So a source's prompts can be answered by the target itself (self-distillation,
as Medusa, SpecForge and speculators do): `responses: target` in config.

A source's rows are its first `count` conversations in the seeded order of `taps.data`
(`source_order`), few-shot exemplars (`taps.prompts`) left out, each with its `order`: a
training mixture that takes c conversations of the source takes the rows with order < c, so
mixtures share the source's rows (and features) instead of recomputing them.

Target-written answers are generated in batches (`generate_batch`: `taps.batch_decode`, which
runs the few-shot prefix the batch shares once and drops rows as they stop; greedy unless a
temperature is set), stopping at EOS, at a
stop string (the plain template's next `User:` turn), or at `max_new_tokens`; each answer keeps
exactly the tokens the target emitted, stop string included, so the drafter learns the
target's own token sequence. Multi-turn conversations are cut to their first exchange
(`turns: first`, the default) or regenerated turn by turn on the target's own earlier answers
(`turns: all`).

Output: one Parquet per source with the columns of `taps.data` (input_ids, loss_mask, source)
plus `order`, `context` (tokens of the exemplar prefix, which training skips), `writer` (the
model that wrote the answers, or "dataset") and `finish` (eos | stop | length | dataset); the
settings, exemplars and stop strings are kept in the file's metadata.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import torch
from tqdm import tqdm

from taps.batch_decode import decode_batch
from taps.data import Conversation, encode_text, source_order, write_parquet_atomic
from taps.generate import StopStrings
from taps.prompts import PromptFormat
from taps.target import TargetModel

RESPONSES = ("dataset", "target")
TURNS = ("first", "all")
METADATA_KEY = b"taps.answers"


@dataclass(frozen=True)
class AnswerConfig:
    """How a source's answers are written."""

    responses: str = "dataset"  # "dataset": the source's own text; "target": the target answers
    turns: str = "first"  # multi-turn conversations: "first" exchange only, or "all" turn by turn
    max_new_tokens: int = 256  # per generated answer
    temperature: float = 0.0  # 0: greedy
    seed: int = 0  # seeds sampling (temperature > 0)
    batch_size: int = 16  # prompts per generate call (sorted by length: little padding)
    max_length: int = 512  # training rows are cut to this many tokens after the exemplar prefix

    def __post_init__(self) -> None:
        if self.responses not in RESPONSES:
            raise ValueError(f"responses must be one of {RESPONSES}, got {self.responses!r}")
        if self.turns not in TURNS:
            raise ValueError(f"turns must be one of {TURNS}, got {self.turns!r}")
        if min(self.max_new_tokens, self.batch_size, self.max_length) < 1 or self.temperature < 0:
            raise ValueError("max_new_tokens, batch_size and max_length must be >= 1 and temperature >= 0")


def select(name: str, conversations: Sequence[Conversation], count: int | None, seed: int,
           exclude: Sequence[int] = ()) -> list[Conversation]:
    """The first `count` conversations in the source's seeded order, leaving out `exclude` (exemplars)."""
    skip = set(exclude)
    order = [i for i in source_order(name, len(conversations), seed) if i not in skip]
    if count is not None and count > len(order):
        raise ValueError(f"source {name!r}: count {count} is more than the {len(order)} conversations it has "
                         f"(exemplars left out)")
    return [conversations[i] for i in order[:count]]


def development_prompts(name: str, conversations: Sequence[Conversation], tokenizer, fmt: PromptFormat, count: int,
                        seed: int, trained: int, exclude: Sequence[int] = ()) -> list[list[int]]:
    """Prompt ids (system turn and first question, few-shot rendered) of the last `count` conversations of the
    source's seeded order: mixtures train on the first `trained` at most, so none of these, and they are never
    benchmark prompts. Tuning (rule tune_tree) and the learning curve score drafters on them."""
    order = select(name, conversations, None, seed, exclude)
    if count < 1 or count + trained > len(order):
        raise ValueError(f"source {name!r}: {count} development prompts after the {trained} trained on need "
                         f"{count + trained} conversations, and it has {len(order)} (exemplars left out)")
    return [first_prompt(conversation, tokenizer, fmt) for conversation in order[-count:]]


def first_prompt(conversation: Conversation, tokenizer, fmt: PromptFormat) -> list[int]:
    """The ids the target continues to answer a conversation's first question (its system turn kept)."""
    turns = [t for t in conversation if t[0] == "system"][:1] + [next(t for t in conversation if t[0] == "user")]
    text, spans, context_chars = fmt.render(tokenizer, turns, True)
    return encode_text(tokenizer, text, spans, context_chars, 10**9)[0]


def first_turns(conversation: Conversation, config: AnswerConfig) -> Conversation:
    """The conversation, or its system turn and first exchange with turns="first"."""
    if config.turns == "all":
        return conversation
    system = 1 if conversation[0][0] == "system" else 0
    return conversation[: system + 2]


# ---------------------------------------------------------------- batched generation


def generate_batch(target: TargetModel, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   temperature: float = 0.0, stop: StopStrings | None = None) -> list[tuple[list[int], str]]:
    """(new tokens, finish) per prompt, decoded together (`taps.batch_decode`: the shared prefix once,
    finished rows dropped); greedy at T=0, else plain temperature sampling from torch's global RNG.

    The tokens are those the vanilla loop would emit for each prompt alone: cut after the first
    EOS or stop string, at most max_new_tokens; finish says which ended it (eos | stop | length).
    """
    return decode_batch(target, prompts, max_new_tokens, temperature, stop)


def _generate_all(target: TargetModel, prompts: list[list[int]], config: AnswerConfig, stop: StopStrings | None,
                  progress: bool, desc: str) -> list[tuple[list[int], str]]:
    """generate_batch over all prompts, longest first in batches of batch_size; tokens/s on the bar."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: list = [None] * len(prompts)
    torch.manual_seed(config.seed)  # sampling (temperature > 0) is seeded; greedy does not draw
    made, start = 0, time.perf_counter()
    with tqdm(total=len(prompts), desc=desc, unit="answer", disable=not progress) as bar:
        for lo in range(0, len(order), config.batch_size):
            batch = order[lo: lo + config.batch_size]
            for i, res in zip(batch, generate_batch(target, [prompts[i] for i in batch], config.max_new_tokens,
                                                    config.temperature, stop)):
                results[i] = res
                made += len(res[0])
            bar.set_postfix(tok_s=f"{made / (time.perf_counter() - start):.1f}", refresh=False)
            bar.update(len(batch))
    return results


# ---------------------------------------------------------------- rows of a source


def _row(name: str, order: int, ids: list[int], mask: list[int], context: int, writer: str, finish: str) -> dict:
    return {"input_ids": ids, "loss_mask": mask, "source": name, "order": order, "context": context,
            "writer": writer, "finish": finish}


def dataset_rows(name: str, conversations: Sequence[Conversation], tokenizer, fmt: PromptFormat,
                 config: AnswerConfig) -> list[dict]:
    """Rows answered by the dataset's own text; a row with no trained token left is dropped."""
    rows = []
    for order, conversation in enumerate(conversations):
        text, spans, context_chars = fmt.render(tokenizer, first_turns(conversation, config))
        ids, mask, context = encode_text(tokenizer, text, spans, context_chars, config.max_length)
        if any(mask):
            rows.append(_row(name, order, ids, mask, context, "dataset", "dataset"))
    return rows


def target_rows(name: str, conversations: Sequence[Conversation], target: TargetModel, fmt: PromptFormat,
                config: AnswerConfig, progress: bool = True) -> list[dict]:
    """Rows answered by the target, turn after turn on its own earlier answers (batched per turn)."""
    tokenizer = target.tokenizer
    stop = fmt.stop_strings(tokenizer)
    chats = [first_turns(c, config) for c in conversations]
    history: list[Conversation] = [[t for t in c[:1] if t[0] == "system"] for c in chats]
    users = [[text for role, text in c if role == "user"] for c in chats]
    last: list = [None] * len(chats)  # (prompt ids, prompt mask, context, answer tokens, finish)
    for turn in range(max(len(u) for u in users)):
        live, prompts = [], []
        for i in range(len(chats)):
            if turn >= len(users[i]):
                continue
            text, spans, context_chars = fmt.render(tokenizer, history[i] + [("user", users[i][turn])], True)
            ids, mask, context = encode_text(tokenizer, text, spans, context_chars, 10**9)
            if len(ids) - context < config.max_length:  # else no answer token would fit the training row
                live.append(i)
                prompts.append((ids, mask, context))
            else:  # the conversation ends at its last answered turn
                users[i] = users[i][:turn]
        if not live:
            break
        answers = _generate_all(target, [p[0] for p in prompts], config, stop, progress,
                                f"{name} turn {turn + 1}")
        for i, (ids, mask, context), (tokens, finish) in zip(live, prompts, answers):
            last[i] = (ids, mask, context, tokens, finish)
            history[i] += [("user", users[i][turn]), ("assistant", fmt.answer(tokenizer, tokens))]
    rows = []
    for order, answered in enumerate(last):
        if answered is None:  # its first prompt alone filled max_length
            continue
        ids, mask, context, tokens, finish = answered
        keep = context + config.max_length
        row_ids, row_mask = (ids + tokens)[:keep], (mask + [1] * len(tokens))[:keep]
        if any(row_mask):
            rows.append(_row(name, order, row_ids, row_mask, context, target.name, finish))
    return rows


def write_source(rows: list[dict], out_path: str | Path, settings: dict) -> None:
    """The rows as Parquet (columns: module docstring), settings in the metadata, written atomically."""
    table = pa.table({
        "input_ids": pa.array([r["input_ids"] for r in rows], type=pa.list_(pa.int32())),
        "loss_mask": pa.array([r["loss_mask"] for r in rows], type=pa.list_(pa.int8())),
        **{k: pa.array([r[k] for r in rows], type=t) for k, t in
           (("source", pa.string()), ("order", pa.int32()), ("context", pa.int32()), ("writer", pa.string()),
            ("finish", pa.string()))},
    })
    write_parquet_atomic(table.replace_schema_metadata({METADATA_KEY: json.dumps(settings)}), out_path)


def prepare_source(name: str, conversations: Sequence[Conversation], count: int | None, seed: int,
                   tokenizer, fmt: PromptFormat, config: AnswerConfig, out_path: str | Path,
                   target: TargetModel | None = None, exclude: Sequence[int] = (), progress: bool = True) -> dict:
    """Select, answer (dataset or target) and write one source's rows; returns a summary."""
    chosen = select(name, conversations, count, seed, exclude)
    if config.responses == "target":
        if target is None:
            raise ValueError(f"source {name!r}: responses 'target' needs the target model")
        rows = target_rows(name, chosen, target, fmt, config, progress)
    else:
        rows = dataset_rows(name, chosen, tokenizer, fmt, config)
    if not rows:
        raise ValueError(f"source {name!r}: no conversation kept a trained token; raise max_length")
    settings = {"source": name, "count": count, "seed": seed, "exclude": list(exclude), **asdict(config),
                "writer": target.name if config.responses == "target" else "dataset", **fmt.to_json(),
                "tokenizer": getattr(tokenizer, "name_or_path", "")}
    write_source(rows, out_path, settings)
    finishes = [r["finish"] for r in rows]
    return {"rows": len(rows), "selected": len(chosen), **{f: finishes.count(f) for f in sorted(set(finishes))},
            "answer_tokens": sum(sum(r["loss_mask"]) for r in rows)}
