"""Evaluation prompts: the user turns of benchmark files, read the same way for every benchmark.

We measure how many drafted tokens the target accepts, not whether its answers are right, so a
benchmark is only a source of user turns. A `Benchmark` names a JSONL file (one JSON object per
line) and how to read a record: either `turns_field`, a field holding the list of user turns of
a multi-turn conversation (MT-Bench "turns"), or `prompt_fields`, fields joined with a single
space into one user turn (SVAMP "Body" + "Question"); `id_field` names the record's id, or
the 1-based line number is used. The paper's benchmarks are presets (`BUILTIN`); a config may
define its own with the same keys (`benchmark_from_config`), with no code change.

`load_prompts` returns `Prompt`s: the first `limit` records, or with a seed a seeded random
sample of `limit` records kept in file order, so the same config always gives the same prompts.
Turns after the first are conditioned on the target's own earlier answers: the evaluator
generates turn by turn and renders each with `build_turn_prompt`, which uses the conversation
template of `taps.data` (the tokenizer's chat template, else the plain template), after the
few-shot exemplars of a base target (`taps.prompts`).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

from taps.data import resolve_data_file
from taps.prompts import PromptFormat


@dataclass(frozen=True)
class Benchmark:
    """How to read evaluation prompts from one JSONL file; set exactly one of turns_field / prompt_fields."""

    name: str  # label written beside every result of this benchmark
    path: str | None = None  # JSONL file; relative paths resolve against the data directory
    turns_field: str | None = None  # field holding a list of user turns (multi-turn benchmarks)
    prompt_fields: tuple[str, ...] | None = None  # fields joined with one space into a single user turn
    id_field: str | None = None  # field holding the record's id; None: the 1-based line number
    kind: str = "jsonl"  # "jsonl" (the file at `path`) or "hub" (`hub_id` through the `datasets` package)
    hub_id: str | None = None  # a dataset id on the Hugging Face hub, or a local dataset directory
    split: str = "test"  # the hub dataset's split

    def __post_init__(self):
        if self.kind not in ("jsonl", "hub") or (self.kind == "hub") != bool(self.hub_id) or (
                self.kind == "jsonl" and not self.path):
            raise ValueError(f"benchmark {self.name!r}: kind 'jsonl' needs a `path` (a JSONL file, absolute or "
                             f"relative to the data directory), kind 'hub' a `hub_id` (and `split`, default "
                             f"'test'); got kind={self.kind!r}, path={self.path!r}, hub_id={self.hub_id!r}")
        if isinstance(self.prompt_fields, str):  # a single field written without a list
            object.__setattr__(self, "prompt_fields", (self.prompt_fields,))
        elif self.prompt_fields is not None:
            object.__setattr__(self, "prompt_fields", tuple(self.prompt_fields))
        if (self.turns_field is None) == (self.prompt_fields is None) or self.prompt_fields == ():
            raise ValueError(
                f"benchmark {self.name!r}: set exactly one of `turns_field` (a field holding a list of user "
                f"turns, e.g. 'turns') or `prompt_fields` (a list of fields joined into one user turn, e.g. "
                f"['Body', 'Question']); got turns_field={self.turns_field!r}, "
                f"prompt_fields={self.prompt_fields!r}")

    def fields_read(self) -> tuple[str, ...]:
        """The fields every record must have."""
        text = (self.turns_field,) if self.turns_field is not None else self.prompt_fields
        return text + ((self.id_field,) if self.id_field is not None else ())


@dataclass(frozen=True)
class Prompt:
    """One evaluation conversation: the user turns, to be answered one after another."""

    benchmark: str  # the Benchmark's name
    id: str  # the record's id (its id field, or its 1-based line number)
    turns: tuple[str, ...]  # user turns, in order; one for single-turn benchmarks


# The benchmarks of the paper, by name; files as in the project's data/ directory (its README).
BUILTIN = {
    "mt_bench": Benchmark("mt_bench", "mt_bench.jsonl", turns_field="turns", id_field="question_id"),
    "gsm8k": Benchmark("gsm8k", "gsm8k_test.jsonl", prompt_fields=("question",)),
    "math500": Benchmark("math500", "math500.jsonl", prompt_fields=("problem",), id_field="unique_id"),
    "svamp": Benchmark("svamp", "svamp.jsonl", prompt_fields=("Body", "Question"), id_field="ID"),
}

# How results name the paper's benchmarks, in the paper's column order, and each one's domain (the
# drafter trained for it): shared by tables, figures and findings.
DISPLAY_NAMES = {"mt_bench": "MT-Bench", "gsm8k": "GSM8K", "math500": "MATH-500", "svamp": "SVAMP"}
DOMAINS = {"mt_bench": "chat", "gsm8k": "math", "math500": "math", "svamp": "math"}


def display_name(benchmark: str) -> str:
    return DISPLAY_NAMES.get(benchmark, benchmark)


def column_order(names) -> list[str]:
    """The paper's benchmarks among `names` in the paper's order, then the others as they first appear."""
    seen = list(dict.fromkeys(names))
    return [b for b in DISPLAY_NAMES if b in seen] + [b for b in seen if b not in DISPLAY_NAMES]


SPEC_KEYS = tuple(f.name for f in fields(Benchmark) if f.name != "name")  # keys a config spec may set


def benchmark_from_config(name: str, spec: dict | None = None) -> Benchmark:
    """A built-in benchmark by name (spec None), or the benchmark a config spec defines.

    A spec has the keys of `SPEC_KEYS` (path, turns_field, prompt_fields, id_field, kind, hub_id,
    split) and needs `path` (kind jsonl) or `hub_id` (kind hub), and one of turns_field / prompt_fields.
    """
    if spec is None:
        if name not in BUILTIN:
            raise ValueError(f"unknown benchmark {name!r}; built-in benchmarks: {', '.join(BUILTIN)}. "
                             f"To define your own, give it a spec with keys {', '.join(SPEC_KEYS)}")
        return BUILTIN[name]
    for key in spec:
        if key not in SPEC_KEYS:
            raise ValueError(f"benchmark {name!r}: unknown key {key!r}; known keys: {', '.join(SPEC_KEYS)}")
    return Benchmark(name=name, **spec)


def _record_prompt(benchmark: Benchmark, record, where: str, line_no: int) -> Prompt:
    """The Prompt of one parsed record; `where` ("file:line") prefixes any error."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for field in benchmark.fields_read():
        if field not in record:
            raise ValueError(f"{where}: record lacks field {field!r} (benchmark {benchmark.name!r}); "
                             f"its fields are {sorted(record)}")
    if benchmark.turns_field is not None:
        turns = record[benchmark.turns_field]
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise ValueError(f"{where}: field {benchmark.turns_field!r} must be a non-empty list of strings")
        turns = tuple(turns)
    else:
        for field in benchmark.prompt_fields:
            if not isinstance(record[field], str):
                raise ValueError(f"{where}: field {field!r} must be a string, got {type(record[field]).__name__}")
        turns = (" ".join(record[field] for field in benchmark.prompt_fields),)
    record_id = record[benchmark.id_field] if benchmark.id_field is not None else line_no
    return Prompt(benchmark.name, str(record_id), turns)


def read_prompts(benchmark: Benchmark, path: Path, limit: int | None = None) -> list[Prompt]:
    """The prompts of the file's records in order (the first `limit`), one JSON object per line; blank lines skipped."""
    prompts = []
    with open(path, encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, start=1):
            if limit is not None and len(prompts) >= limit:
                break
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not a JSON object on one line ({err})") from err
            prompts.append(_record_prompt(benchmark, record, where, line_no))
    return prompts


def read_hub_prompts(benchmark: Benchmark) -> list[Prompt]:
    """The prompts of a hub dataset's split, in order (`datasets.load_dataset`, which also reads a local
    dataset directory or a saved copy in the datasets cache)."""
    import datasets

    try:
        rows = datasets.load_dataset(benchmark.hub_id, split=benchmark.split)
    except Exception as err:  # offline, unknown id or split: one message for all
        raise RuntimeError(
            f"benchmark {benchmark.name!r}: cannot load {benchmark.hub_id!r} split {benchmark.split!r} through "
            f"`datasets` ({type(err).__name__}: {err}). Offline, use a local copy: kind 'jsonl' with `path`, or "
            "`hub_id` naming a local dataset directory") from err
    return [_record_prompt(benchmark, row, f"{benchmark.hub_id}[{i}]", i + 1) for i, row in enumerate(rows)]


def sample_positions(n: int, limit: int, seed: int) -> list[int]:
    """The first `limit` positions of a seeded shuffle of 0..n-1, in ascending order (all when limit >= n).
    Samples of one seed are nested: a smaller `limit` takes a subset of a larger one's positions, so T=1's
    10 prompts are among T=0's 20 and the two temperatures compare on the same prompts."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[:limit])


def load_prompts(benchmark: Benchmark, data_dir: str | Path | None, limit: int | None = None,
                 seed: int | None = None) -> list[Prompt]:
    """The benchmark's prompts: the first `limit`, or with `seed` a seeded sample of `limit` in file order.

    Relative paths resolve against `data_dir` (None: the working directory). Record ids must be
    unique, since results are keyed by (benchmark, id).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"benchmark {benchmark.name!r}: limit must be positive or None, got {limit}")
    if benchmark.kind == "hub":
        path, prompts = benchmark.hub_id, read_hub_prompts(benchmark)
        if seed is None:
            prompts = prompts[:limit]
    else:
        path = resolve_data_file(benchmark.path, data_dir, f"benchmark {benchmark.name!r}")
        prompts = read_prompts(benchmark, path, limit if seed is None else None)
    if seed is not None:
        if limit is not None:
            prompts = [prompts[i] for i in sample_positions(len(prompts), limit, seed)]
    repeated = [i for i, count in Counter(prompt.id for prompt in prompts).items() if count > 1]
    if repeated:
        raise ValueError(f"benchmark {benchmark.name!r}: id {repeated[0]!r} occurs more than once in {path}; "
                         f"set `id_field` to a unique field, or None to use line numbers")
    return prompts


def build_turn_prompt(tokenizer, history: Sequence[tuple[str, str]], user_turn: str,
                      fmt: PromptFormat = PromptFormat()) -> str:
    """The text the target continues to answer `user_turn`, after the earlier (user, assistant) turns.

    For MT-Bench's second turn, `history` holds the first question and the target's own answer.
    Rendered by `fmt` (`taps.prompts`: the few-shot exemplars of a base target, if any) over
    `taps.data.format_conversation`, with the generation prompt (assistant header).
    """
    turns = [turn for user, assistant in history for turn in (("user", user), ("assistant", assistant))]
    text, _, _ = fmt.render(tokenizer, turns + [("user", user_turn)], add_generation_prompt=True)
    return text
