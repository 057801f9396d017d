"""How a target is prompted: its chat template, or the plain template with few-shot exemplars.

A base model (google/gemma-3-270m here) has no chat template. Asked a question zero-shot in
the plain template of `taps.data` it echoes the question, loops, or writes the next `User:`
turn itself; shown k solved examples of the same task first, it answers in the task's form.
So for a target without a chat template, training regeneration and evaluation both render a
conversation as

    {bos}User: {exemplar question 1}\n\nAssistant: {exemplar answer 1}\n\n ... (k exemplars)
    User: {question}\n\nAssistant:

and generation stops where the model starts a new turn (`USER_TURN_STOP`). The exemplars are
k single exchanges drawn from the training split of the same task (`choose_exemplars`: a
seeded draw among short ones), never from a test set; the same exemplars prompt the target
when it writes training answers and when it is evaluated, so drafters train on the context
they are evaluated in. A target with a chat template keeps it: no exemplars, no stop string
(its end-of-turn token is EOS).

`PromptFormat.render` returns the text, the character spans of the real assistant replies
(exemplar replies are context, never trained on) and the length of the exemplar prefix in
characters (`context`): feature extraction computes the prefix once and training skips it.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from typing import Sequence

from taps.data import Conversation, format_conversation
from taps.generate import USER_TURN_STOP, StopStrings
from taps.intermediates import read_json

MAX_EXEMPLAR_CHARS = 800  # an exemplar's question + answer; longer ones would dominate the prompt
MIN_EXEMPLAR_CHARS = 40  # and shorter ones show nothing of the task's form
ASCII_SHARE = 0.98  # ShareGPT holds many languages; exemplars are English, as the benchmarks are


@dataclass(frozen=True)
class PromptFormat:
    """Few-shot exemplars and stop strings of a target without a chat template (none with one)."""

    exemplars: tuple[tuple[str, str], ...] = ()  # (question, answer) exchanges shown before the conversation
    stop: tuple[str, ...] = ()  # generation ends once the output contains one of these

    def turns(self, conversation: Conversation) -> tuple[Conversation, Conversation]:
        """(context, conversation): a system turn and the exemplars as user/assistant turns; the rest."""
        system = list(conversation[:1]) if conversation and conversation[0][0] == "system" else []
        shots = [turn for q, a in self.exemplars for turn in (("user", q), ("assistant", a))]
        return system + shots, list(conversation[len(system):])

    def render(self, tokenizer, conversation: Conversation,
               add_generation_prompt: bool = False) -> tuple[str, list[tuple[int, int]], int]:
        """(text, spans of the conversation's own replies, characters of the exemplar prefix)."""
        context, rest = self.turns(conversation)
        text, spans = format_conversation(tokenizer, context + rest, add_generation_prompt)
        if not self.exemplars:
            return text, spans, 0
        prefix, _ = format_conversation(tokenizer, context)
        return text, spans[len(self.exemplars):], len(prefix)

    def stop_strings(self, tokenizer) -> StopStrings | None:
        """The stop rule generation applies under this format (None: stop at EOS only)."""
        return StopStrings(tokenizer, self.stop) if self.stop else None

    def answer(self, tokenizer, tokens: Sequence[int]) -> str:
        """A generated answer as history for the next turn: no special tokens, cut before a stop string."""
        text = tokenizer.decode(list(tokens), skip_special_tokens=True)
        if not self.stop:
            return text
        for s in self.stop:
            text = text.split(s)[0]
        return text.strip()

    def to_json(self) -> dict:
        return {"exemplars": [list(e) for e in self.exemplars], "stop": list(self.stop)}


def plain_format(tokenizer, exemplars: Sequence[tuple[str, str]]) -> PromptFormat:
    """Exemplars and the user-turn stop for a target without a chat template; nothing for one with."""
    if getattr(tokenizer, "chat_template", None):
        return PromptFormat()
    return PromptFormat(tuple(tuple(e) for e in exemplars), USER_TURN_STOP)


def _usable(question: str, answer: str) -> bool:
    text = question + answer
    ascii_share = sum(c.isascii() for c in text) / max(len(text), 1)
    return MIN_EXEMPLAR_CHARS <= len(text) <= MAX_EXEMPLAR_CHARS and ascii_share >= ASCII_SHARE


def choose_exemplars(conversations: Sequence[Conversation], k: int, seed: int,
                     name: str) -> list[int]:
    """Indices of k conversations whose first exchange serves as an exemplar (seeded, short ones only).

    Drawn by a shuffle seeded by (seed, name) that differs from the one selecting training
    conversations, so the exemplars are a fixed handful; callers exclude them from training.
    """
    order = list(range(len(conversations)))
    random.Random(f"{seed}:{name}:fewshot").shuffle(order)
    chosen = []
    for i in order:
        if len(chosen) == k:
            break
        user, assistant = first_exchange(conversations[i])
        if _usable(user, assistant):
            chosen.append(i)
    if len(chosen) < k:
        raise ValueError(f"source {name!r}: only {len(chosen)} of its conversations can serve as few-shot "
                         f"exemplars ({MIN_EXEMPLAR_CHARS}-{MAX_EXEMPLAR_CHARS} characters, English), {k} wanted; "
                         "lower `fewshot`")
    return chosen


def first_exchange(conversation: Conversation) -> tuple[str, str]:
    """(user text, assistant text) of the conversation's first exchange."""
    turns = [t for t in conversation if t[0] != "system"]
    return turns[0][1], turns[1][1]


@dataclass
class FewShotFile:
    """The exemplars of one source, as the workflow stores them (results/prompts/{target}/{source}.json)."""

    source: str
    indices: list[int]  # positions in the source's conversations (excluded from its training data)
    exemplars: list[tuple[str, str]] = field(default_factory=list)

    def write(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(f"{path}.tmp", "w") as f:
            json.dump({"source": self.source, "indices": self.indices,
                       "exemplars": [list(e) for e in self.exemplars]}, f, indent=2)
        os.replace(f"{path}.tmp", path)

    @staticmethod
    def read(path: str) -> "FewShotFile":
        data = read_json(path, "few-shot exemplars")
        return FewShotFile(data["source"], data["indices"], [tuple(e) for e in data["exemplars"]])


def load_format(tokenizer, fewshot_path: str | None) -> PromptFormat:
    """The prompt format of a target, with the exemplars of a few-shot file (None: zero-shot)."""
    exemplars = FewShotFile.read(fewshot_path).exemplars if fewshot_path else []
    return plain_format(tokenizer, exemplars)
