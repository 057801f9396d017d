"""Decoding loops on the target adapter: speculative (draft, verify, accept, compact) and vanilla.

Both loops share the adapter, the sampler and the record format, so the vanilla loop is the
exact baseline: same model calls, one token per target pass. Each loop returns the generated
tokens (the prefill's token first) plus raw per-cycle and per-node records, ready to become
Parquet tables. Acceptance length is computed from them in one place: `taps.metrics`.

Generation ends at max_new_tokens, just after an EOS token, or just after the token that
completes a stop string (`StopStrings`, as Hugging Face's `stop_strings`); both loops cut a
cycle's new tokens with the same function (`cut_new_tokens`), so they end at the same token.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch
from torch import Tensor

from taps.target import TargetModel
from taps.tree import DraftTree, likely_nodes
from taps.verify import sample_token, verify


class Proposer(Protocol):
    """What the speculative loop needs from a drafter or a composition of drafters."""

    def reset(self) -> None: ...

    def commit(self, features: Tensor, next_tokens: Tensor) -> None: ...

    def propose(self, root: int) -> DraftTree: ...


@dataclass
class Generation:
    """Output of one decoding run."""

    tokens: list[int]  # generated ids, prompt excluded; tokens[0] comes from the prefill
    cycles: list[dict] = field(default_factory=list)  # one row per target pass after the prefill
    nodes: list[dict] = field(default_factory=list)  # one row per drafted node (roots excluded)
    candidates: list[dict] = field(default_factory=list)  # replay of a routed proposer: every tree, per cycle
    prefill_seconds: float = 0.0
    seconds: float = 0.0  # wall time of the whole run, prefill included
    stopped: str = ""  # why it ended: "eos", "stop" (a stop string) or "length" (max_new_tokens)
    drafter_steps: int = 0  # drafter passes after the prompt's commit (tree levels and commits; `steps`)


HEAD_ROWS = 8  # target head rows computed per call during verification (NodeLogits)


class NodeLogits:
    """Target logits of tree nodes, computed only for the rows verification reads (node i -> [V]).

    The 262k-row head is bound by reading its weights: on this CPU 1 row costs 14 ms, 8 rows 15,
    16 rows 18 and 60 rows 58 (`taps.linear`, `benchmarks/cost_curve.py`). Verification reads one
    row per accepted depth, so a missing row is computed together with the rows most likely read
    next: the node's most probable descendants under the drafter (`taps.tree.likely_nodes`),
    `HEAD_ROWS` at a time. On GSM8K with the math drafter that is 1.3 head calls per pass at tree
    16/4/4 and 1.5 at 60/5/10, against 2.8 and 3.4 computing one row at a time.
    """

    def __init__(self, target: TargetModel, features: Tensor, tree: DraftTree):
        self.target, self.features, self.tree, self.rows = target, features, tree, {}

    def __getitem__(self, i: int) -> Tensor:
        if i not in self.rows:
            nodes = [n for n in likely_nodes(self.tree, i, HEAD_ROWS) if n not in self.rows]
            for n, row in zip(nodes, self.target.logits(self.features[nodes])):
                self.rows[n] = row
        return self.rows[i]


def chain(n: int) -> Tensor:
    """Parents of a plain sequence of n tokens: [-1, 0, 1, ..., n - 2]."""
    return torch.arange(-1, n - 1)


# The plain template's next user turn (`taps.data.PLAIN_TEMPLATE`, whose turns end with "\n\n"):
# a base model prompted with that template tends to go on and write the user's next turn. Typed
# here because the engine does not import the training data module; a test pins it to the template.
USER_TURN_STOP = ("\nUser:",)


class StopStrings:
    """Stop strings: generation ends just after the token whose text completes one (kept, like EOS).

    `find` is a pure function of the generated tokens: whether tokens[:k] ends generation
    depends on tokens[:k] alone, never on how tokens were grouped into cycles, so the vanilla
    and the speculative loop, which emit the same tokens at T=0, stop at the same token and
    greedy speculative decoding stays lossless.

    Only the generated text is searched (not the prompt), and at each token only a window of it,
    never the whole output. An occurrence first completed by token k-1 has at least one of its
    UTF-8 bytes in that token and so at most 4 * longest - 1 in the tokens before it. A token
    decoded alone gives at most one character per byte (a replacement character for each byte of
    a character split across tokens, as byte-level BPE and byte fallback do), so the tokens
    before k-1 whose texts decoded alone hold 4 * longest - 1 characters hold those bytes: the
    window is token k-1 plus as many tokens before it (lengths memoized per id). A token that
    decodes alone to "" counts nothing, so the window reaches past any run of them.
    """

    def __init__(self, tokenizer, strings: Sequence[str]):
        self.strings = tuple(strings)
        if not self.strings or not all(isinstance(s, str) and s for s in self.strings):
            raise ValueError(f"StopStrings needs one or more non-empty strings, got {strings!r}")
        if not callable(getattr(tokenizer, "decode", None)):
            raise ValueError("StopStrings needs a tokenizer with a decode(ids) method; this target has none")
        self.decode = tokenizer.decode
        self.lookback = 4 * max(len(s) for s in self.strings) - 1  # characters before the last token
        self.lengths: dict[int, int] = {}  # token id -> length of its text decoded alone

    def find(self, tokens: Sequence[int], start: int = 0) -> int | None:
        """Length k > start of the shortest prefix tokens[:k] whose text holds a stop string; None if
        none does. tokens: generated ids, prompt excluded; tokens[:start] were searched before and
        hold none."""
        for k in range(start + 1, len(tokens) + 1):
            lo, chars = k - 1, 0
            while lo > 0 and chars < self.lookback:
                lo -= 1
                chars += self._length(tokens[lo])
            text = self.decode(list(tokens[lo:k]))
            if any(s in text for s in self.strings):
                return k
        return None

    def _length(self, token: int) -> int:
        if token not in self.lengths:
            self.lengths[token] = len(self.decode([token]))
        return self.lengths[token]


def cut_new_tokens(tokens: list[int], new: list[int], max_new_tokens: int, eos: set[int],
                   stop: StopStrings | None = None) -> tuple[list[int], str]:
    """The part of `new` a cycle emits after the generated `tokens`, and why generation ends there.

    The cut is the earliest of: the room left before max_new_tokens ("length"), just after the
    first EOS ("eos"), just after the token that completes a stop string ("stop"); EOS wins a tie.
    The reason is "" when generation goes on.
    """
    room = max_new_tokens - len(tokens)
    keep = max(0, min(len(new), room))
    why = "length" if keep >= room else ""
    found = stop.find(tokens + new[:keep], len(tokens)) if stop is not None else None
    if found is not None:
        keep, why = found - len(tokens), "stop"
    first_eos = next((i + 1 for i, t in enumerate(new[:keep]) if t in eos), None)
    if first_eos is not None:
        keep, why = first_eos, "eos"
    return new[:keep], why


class SharedPrefix:
    """The target's KV cache and features of a token prefix many prompts share (a base target's few-shot
    exemplars, ~400-600 tokens here), computed once and reused by every prompt that starts with it.

    `run` gives the cache and features of a whole sequence that `starts` with it: a copy of the
    prefix's cache, extended by one pass over the rest (`run_prompt` runs any other sequence whole). The
    prefix's rows come from a pass over the prefix alone, so they equal a whole-sequence pass's up
    to float rounding (causal attention: no prefix row sees what follows); every loop and replay
    of an evaluation reads the same prefix, so they stay equal to one another.
    """

    def __init__(self, target: TargetModel, ids: Sequence[int]):
        self.ids = torch.as_tensor(list(ids), dtype=torch.long)  # [p]
        self.cache = target.new_cache()
        self.features = target.forward(self.ids, chain(len(self.ids)), self.cache) if len(self.ids) else None
        self.reused = 0  # sequences that started with the prefix
        self.drafted: dict = {}  # proposer -> its state after committing the prefix (`commit`)

    def starts(self, tokens: Tensor) -> bool:
        """Whether `tokens` start with the prefix (and go on past it)."""
        return 0 < len(self.ids) < len(tokens) and torch.equal(tokens[:len(self.ids)], self.ids)

    def commit(self, proposer: Proposer) -> int:
        """Commit the prefix to a freshly reset `proposer`: its state is computed once, then restored; returns
        the prompt rows it covers (all but the prefix's last, whose next token lies past the prefix). A proposer
        without snapshot/restore is left alone (0 rows)."""
        rows = len(self.ids) - 1
        if rows < 1 or not hasattr(proposer, "snapshot"):
            return 0
        if proposer not in self.drafted:
            proposer.commit(self.features[:rows], self.ids[1:])
            self.drafted[proposer] = proposer.snapshot()
        else:
            proposer.restore(self.drafted[proposer])
        return rows

    def run(self, target: TargetModel, tokens: Tensor) -> tuple[object, Tensor]:
        """(cache, features [n, H]) of `tokens` ([n] ids, which `starts` with the prefix) run as a chain."""
        p = len(self.ids)
        self.reused += 1
        cache = copy.deepcopy(self.cache)
        rest = target.forward(tokens[p:], chain(len(tokens) - p), cache)
        return cache, torch.cat([self.features, rest])


def run_prompt(target: TargetModel, tokens: Tensor, prefix: SharedPrefix | None = None) -> tuple[object, Tensor]:
    """(cache, features) of `tokens` run as a chain, on top of `prefix` where they start with it."""
    if prefix is not None and prefix.starts(tokens):
        return prefix.run(target, tokens)
    cache = target.new_cache()
    return cache, target.forward(tokens, chain(tokens.numel()), cache)


def _prefill(target: TargetModel, prompt: Tensor, temperature: float, generator, prefix: SharedPrefix | None):
    cache, features = run_prompt(target, prompt, prefix)
    return cache, features, sample_token(target.logits(features[-1]), temperature, generator)


def commit_prompt(proposer: Proposer, features: Tensor, next_tokens: Tensor, prompt: Tensor,
                  prefix: SharedPrefix | None = None) -> None:
    """Commit a prompt's features [L, H] and next tokens [L] to a freshly reset proposer, the shared prefix's
    part restored from `prefix` where the prompt starts with it."""
    done = prefix.commit(proposer) if prefix is not None and prefix.starts(prompt) else 0
    proposer.commit(features[done:], next_tokens[done:])


@torch.no_grad()
def speculative_generate(
    target: TargetModel,
    proposer: Proposer,
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    eos_token_ids: set[int] | None = None,
    stop: StopStrings | None = None,
    prefix: SharedPrefix | None = None,
) -> Generation:
    """Speculative decoding of `prompt` ([L] ids); lossless w.r.t. the target at any temperature.
    `prefix`: a shared prompt prefix whose cache the prefill reuses (`SharedPrefix`)."""
    eos = target.eos_token_ids if eos_token_ids is None else eos_token_ids
    start = time.perf_counter()
    proposer.reset()
    cache, features, root = _prefill(target, prompt, temperature, generator, prefix)
    commit_prompt(proposer, features, torch.cat([prompt[1:], torch.tensor([root])]), prompt, prefix)
    steps = getattr(proposer, "steps", 0)
    out = Generation(tokens=[root], prefill_seconds=time.perf_counter() - start)
    out.stopped = cut_new_tokens([], out.tokens, max_new_tokens, eos, stop)[1]
    while not out.stopped:
        tick = time.perf_counter()
        tree = proposer.propose(root)
        past = cache.get_seq_length()
        features = target.forward(tree.tokens, tree.parents, cache)
        path, bonus = verify(tree, NodeLogits(target, features, tree), temperature, generator)
        target.compact(cache, past, torch.tensor(path))
        new = tree.tokens[path[1:]].tolist() + [bonus]
        emitted, out.stopped = cut_new_tokens(out.tokens, new, max_new_tokens, eos, stop)
        out.tokens += emitted
        record_cycle(out, tree, path, len(emitted), time.perf_counter() - tick)
        if out.stopped:
            break
        proposer.commit(features[path], torch.tensor(new))
        root = bonus
    out.drafter_steps = getattr(proposer, "steps", 0) - steps
    out.seconds = time.perf_counter() - start
    return out


@torch.no_grad()
def vanilla_generate(
    target: TargetModel,
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    eos_token_ids: set[int] | None = None,
    stop: StopStrings | None = None,
    prefix: SharedPrefix | None = None,
) -> Generation:
    """Plain autoregressive decoding on the same adapter: the baseline and the reference output.
    `prefix`: as in `speculative_generate`."""
    eos = target.eos_token_ids if eos_token_ids is None else eos_token_ids
    start = time.perf_counter()
    cache, _, token = _prefill(target, prompt, temperature, generator, prefix)
    out = Generation(tokens=[token], prefill_seconds=time.perf_counter() - start)
    out.stopped = cut_new_tokens([], out.tokens, max_new_tokens, eos, stop)[1]
    while not out.stopped:
        tick = time.perf_counter()
        features = target.forward(torch.tensor([token]), chain(1), cache)
        token = sample_token(target.logits(features[0]), temperature, generator)
        out.stopped = cut_new_tokens(out.tokens, [token], max_new_tokens, eos, stop)[1]
        out.tokens.append(token)
        out.cycles.append({"cycle": len(out.cycles), "accepted": 0, "emitted": 1, "nodes": 1,
                           "drafter": -1, "seconds": time.perf_counter() - tick})
    out.seconds = time.perf_counter() - start
    return out


def record_cycle(out: Generation, tree: DraftTree, path: list[int], emitted: int, seconds: float) -> None:
    """Append one cycle row and its drafted-node rows.

    `accepted` counts the drafted tokens that were emitted (a path cut by max_new_tokens, EOS or
    a stop string counts only up to the cut). `drafter` is the tree's drafter when one drafter
    grew it (the routed choice); for a merged tree, the drafter of the last accepted node (-1 if
    none).
    """
    cycle, accepted = len(out.cycles), min(len(path) - 1, emitted)
    src = tree.source.tolist()
    sources = set(src[1:])
    drafter = sources.pop() if len(sources) == 1 else src[path[accepted]] if accepted else -1
    out.cycles.append({"cycle": cycle, "accepted": accepted, "emitted": emitted, "nodes": len(tree),
                       "drafter": drafter, "seconds": seconds})
    on_path = set(path[: accepted + 1])
    depths, conf = tree.depths.tolist(), tree.confidence.tolist()
    prob, ent, tokens = tree.prob.tolist(), tree.entropy.tolist(), tree.tokens.tolist()
    for i in range(1, len(tree)):
        out.nodes.append({"cycle": cycle, "node": i, "token": tokens[i], "depth": depths[i], "confidence": conf[i],
                          "prob": prob[i],
                          "entropy": ent[i], "accepted": i in on_path, "drafter": src[i]})
