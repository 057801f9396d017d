"""Evaluation: compositions on one benchmark at one temperature, against the vanilla loop.

Several compositions are evaluated in one call (`evaluate_many`), on the same target and the
same contexts. The first `timed_prompts` prompts are timed: on each of their turns the vanilla
loop runs once, then the engine of each timed composition, in the same process, so their
tokens/s compare fairly on any machine (prefill and decode are timed apart). At temperature 0
the speculative output must equal the target's own greedy output token for token. A
multi-turn prompt (MT-Bench) is conditioned on the target's own earlier answers: the greedy
references where given (at T > 0 too, so every composition and both temperatures see the same
second-turn contexts), else the vanilla run. Every run of a turn draws from generators seeded
by (seed, prompt index, turn).

Base targets are prompted few-shot, so every prompt of a benchmark starts with the same
exemplars (~400-600 tokens here). The target runs them once per call (`shared_prefix`,
`taps.generate.SharedPrefix`) and every prefill and replay pass continues from a copy of their
cache (`EvalConfig.prefix_cache`); each drafter commits the prefix once too, and later prompts
restore its state. A test checks that outputs are unchanged by it.

A greedy mismatch (`EvalConfig.on_mismatch`): in fp32 it is a bug, and "error" (the default)
stops the evaluation. In bf16 a tree pass and a single-token pass round differently, so at a
near-tie the speculative output can differ from vanilla's without any loss in the algorithm;
"record" keeps such a turn (its row's `identical` is False, its rows are kept, the history
goes on from the vanilla answer) and goes on. Replay follows the same policy for a reference
that is not the target's one-pass argmax somewhere (`taps.replay.reference_features`): the turn
is scored against the reference all the same and its row counts the disagreeing positions
(`reference_mismatches`). `taps.aggregate` counts the turns of both kinds.

Replay (`EvalConfig.replay`): the target's greedy output does not depend on the drafters, so
the vanilla loop runs once per turn for all compositions (`reference_rows`, the workflow's
`reference` rule) and each composition is scored against it by `taps.replay`, without a
verification pass per cycle. At T > 0 the vanilla loop samples the turn once, in the
evaluation, and every composition is replayed along that sample: the engine's law of tokens and
acceptance lengths, exactly (`taps.replay`'s docstring gives the reason), with every composition
measured on the same contexts. On the timed prompts the engine of the timed compositions runs
too, for tokens/s; at T=0 replay's records are compared with the engine's (`replay_matches`).
Without replay the engine runs every turn.

Results are raw rows, ready for Parquet: one per decoding cycle, one per drafted node, and one
per prompt turn (tokens, verification passes, wall time of both loops; NaN where a turn was
replayed, not timed). Acceptance length and its confidence interval are computed from them by
`taps.metrics`, never stored pre-averaged.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import pandas as pd

import torch
from tqdm import tqdm

from taps.benchmarks import Prompt, build_turn_prompt
from taps.generate import Generation, Proposer, SharedPrefix, StopStrings, speculative_generate, vanilla_generate
from taps.intermediates import read_parquet
from taps.partial import PartialRun
from taps.prompts import PromptFormat
from taps.replay import checked_features, reference_features, replay_generate, sample_features
from taps.target import TargetModel


ON_MISMATCH = ("error", "record")  # EvalConfig.on_mismatch: stop at a greedy mismatch, or record it and go on


@dataclass(frozen=True)
class EvalConfig:
    """How a benchmark is decoded."""

    temperature: float = 0.0  # 0: greedy (checked token for token against vanilla); > 0: sampling
    max_new_tokens: int = 128  # per turn
    seed: int = 0  # seeds every turn's generators, with the prompt index and turn number
    replay: bool = False  # score turns along the vanilla output (greedy, or one sample at T > 0: taps.replay)
    timed_prompts: int = 1  # the first n prompts are timed: vanilla once per turn, then the engines
    on_mismatch: str = "error"  # a T=0 output or reference unlike the target's argmax: "error" stops, "record" counts
    prefix_cache: bool = True  # run the few-shot exemplars' prefix once and reuse its cache (`shared_prefix`)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"EvalConfig.temperature must be >= 0, got {self.temperature}")
        if self.max_new_tokens < 1:
            raise ValueError(f"EvalConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.timed_prompts < 0:
            raise ValueError(f"EvalConfig.timed_prompts must be >= 0, got {self.timed_prompts}")
        if self.on_mismatch not in ON_MISMATCH:
            raise ValueError(f"EvalConfig.on_mismatch must be one of {', '.join(map(repr, ON_MISMATCH))}, "
                             f"got {self.on_mismatch!r}")


@dataclass
class EvalRows:
    """Raw evaluation records: lists of dicts, one table each."""

    cycles: list[dict]  # prompt, turn, cycle, accepted, emitted, nodes, drafter, seconds
    nodes: list[dict]  # prompt, turn, cycle, node, depth, confidence, prob, entropy, accepted, drafter
    turns: list[dict]  # prompt, turn, mode (engine | replay), new_tokens, passes, seconds, identical, ...
    candidates: list[dict] = field(default_factory=list)  # routed, replayed cycles: every tree's signals, accepted


def _generator(seed: int, prompt: int, turn: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + prompt * 101 + turn)


def _ids(tokenizer, history: list[tuple[str, str]], text: str, fmt: PromptFormat) -> torch.Tensor:
    return torch.tensor(tokenizer(build_turn_prompt(tokenizer, history, text, fmt),
                                  add_special_tokens=False).input_ids)



def shared_prefix(target: TargetModel, fmt: PromptFormat, enabled: bool = True) -> SharedPrefix | None:
    """The few-shot exemplars every turn prompt of `fmt` starts with, run once by the target (None without
    exemplars, or when not `enabled`). Its last token is left to the prompts, where a tokenizer could merge
    it with the text that follows; a prompt that does not start with these ids runs whole."""
    text, _, chars = fmt.render(target.tokenizer, [("user", "?")], add_generation_prompt=True)
    if not enabled or not chars:
        return None
    return SharedPrefix(target, target.tokenizer(text[:chars], add_special_tokens=False).input_ids[:-1])


def reference_rows(target: TargetModel, prompts: list[Prompt], config: EvalConfig,
                   progress: bool = True, fmt: PromptFormat = PromptFormat()) -> list[dict]:
    """The vanilla loop once per turn: one row per turn with its prompt ids and generated tokens.

    At temperature 0 this is the target's deterministic output, which every composition is
    replayed against; later turns are conditioned on these answers, as in `evaluate`.
    """
    rows, tokenizer, stop = [], target.tokenizer, fmt.stop_strings(target.tokenizer)
    prefix = shared_prefix(target, fmt, config.prefix_cache)
    for index, prompt in enumerate(tqdm(prompts, desc="reference", disable=not progress)):
        history: list[tuple[str, str]] = []
        for turn, text in enumerate(prompt.turns):
            ids = _ids(tokenizer, history, text, fmt)
            out = vanilla_generate(target, ids, config.max_new_tokens, config.temperature,
                                   _generator(config.seed, index, turn), stop=stop, prefix=prefix)
            rows.append({"benchmark": prompt.benchmark, "prompt": prompt.id, "turn": turn, "prompt_ids": ids.tolist(),
                         "tokens": out.tokens, "seconds": out.seconds - out.prefill_seconds})
            history.append((text, fmt.answer(tokenizer, out.tokens)))
    return rows


REFERENCE_COLUMNS = ("benchmark", "prompt", "turn", "prompt_ids", "tokens", "seconds")


def write_references(rows: list[dict], path: str) -> None:
    """`reference_rows` as Parquet, written atomically."""
    pd.DataFrame(rows, columns=list(REFERENCE_COLUMNS)).to_parquet(f"{path}.tmp")
    os.replace(f"{path}.tmp", path)


def read_references(path: str) -> list[dict]:
    """Rows written by `write_references`; one clear error for a missing or foreign file."""
    table = read_parquet(path, "references")
    missing = [c for c in REFERENCE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} is not a references table: columns {missing} are missing")
    return [{**r, "prompt_ids": [int(t) for t in r["prompt_ids"]], "tokens": [int(t) for t in r["tokens"]]}
            for r in table.to_dict("records")]


def _same_records(a: Generation, b: Generation) -> bool:
    """Same output, cycle rows (wall time aside), and drafted tokens with their acceptance."""
    cycles = lambda g: [{k: v for k, v in r.items() if k != "seconds"} for r in g.cycles]  # noqa: E731
    nodes = lambda g: [(n["cycle"], n["node"], n["token"], n["accepted"], n["drafter"]) for n in g.nodes]  # noqa: E731
    return a.tokens == b.tokens and cycles(a) == cycles(b) and nodes(a) == nodes(b)


def evaluate_many(target: TargetModel, proposers: dict[str, Proposer], prompts: list[Prompt], config: EvalConfig,
                  references: list[dict] | None = None, progress: bool = True,
                  fmt: PromptFormat = PromptFormat(), timed: list[str] | None = None,
                  partial: PartialRun | None = None) -> dict[str, EvalRows]:
    """Decode every turn of every prompt with each proposer (compositions by name); raw rows per name.

    Turns of the first `timed_prompts` prompts are timed: the vanilla loop runs once, then the
    engine of each proposer, one after the other on the same turn (with replay, only the
    proposers named in `timed`, None: all). Without replay the engine runs every turn. With replay
    every turn is replayed, at T=0 against `references` (`reference_rows` of the same prompts and
    config; computed here when None), at T > 0 along the turn's vanilla sample; replay's features
    are computed once per turn for all proposers. A timed T=0 turn keeps the engine's records and
    replay's counts beside them (`replay_matches`, `replay_new_tokens`, `replay_passes`); at T > 0
    replay's records are kept and the engine gives the timing (`engine_new_tokens`, `engine_passes`).
    A later turn is conditioned on the target's own earlier answer: the greedy reference where
    `references` are given (at T > 0 too, so that every composition and both temperatures see the
    same contexts), else the vanilla output. `fmt` renders the prompts (few-shot exemplars of a
    base target) and gives the stop strings; the exemplars' cache is computed once and shared by
    every run (`shared_prefix`, `EvalConfig.prefix_cache`). With `partial`, every finished turn is
    saved there, and a turn saved by an earlier, killed run is read back instead of decoded.
    """
    replay, sampled = config.replay, config.replay and config.temperature > 0
    if replay and not sampled and references is None:
        references = reference_rows(target, prompts, config, progress, fmt)
    refs = {(r["prompt"], r["turn"]): r for r in references or []}
    rows = {name: EvalRows([], [], []) for name in proposers}
    tokenizer, stop = target.tokenizer, fmt.stop_strings(target.tokenizer)
    prefix = shared_prefix(target, fmt, config.prefix_cache)
    for index, prompt in enumerate(tqdm(prompts, desc="prompts", disable=not progress)):
        history: list[tuple[str, str]] = []
        for turn, text in enumerate(prompt.turns):
            ids = _ids(tokenizer, history, text, fmt)
            key = {"benchmark": prompt.benchmark, "prompt": prompt.id, "turn": turn}
            saved = partial.load(index, turn) if partial is not None else None
            if saved is None:
                ref = _reference(refs, key, ids) if refs else None
                turn_rows, answer = _turn(target, proposers, ids, key, ref, index, turn, turn == len(prompt.turns) - 1,
                                          config, timed, stop, prefix)
                saved = {"answer": answer, "rows": {name: asdict(r) for name, r in turn_rows.items()}}
                if partial is not None:
                    partial.save(index, turn, saved["answer"], saved["rows"])
            for name in proposers:
                for table, records in saved["rows"][name].items():
                    getattr(rows[name], table).extend(records)
            if turn < len(prompt.turns) - 1:
                history.append((text, fmt.answer(tokenizer, saved["answer"])))
    return rows


def _turn(target, proposers: dict[str, Proposer], ids: torch.Tensor, key: dict, ref: dict | None, index: int,
          turn: int, last: bool, config: EvalConfig, timed: list[str] | None, stop, prefix: SharedPrefix | None
          ) -> tuple[dict[str, EvalRows], list[int] | None]:
    """One turn decoded by every proposer (`evaluate_many`): its rows per name, and the target's answer a next
    turn is conditioned on (the reference, else the vanilla run; None for a last turn with neither)."""
    replay, sampled = config.replay, config.replay and config.temperature > 0
    is_timed = index < config.timed_prompts
    vanilla = None
    if sampled or is_timed or (ref is None and (not last or config.temperature == 0)):  # sample, timing, history
        vanilla = vanilla_generate(target, ids, config.max_new_tokens, config.temperature,
                                   _generator(config.seed, index, turn), stop=stop, prefix=prefix)
    along = (vanilla.tokens if sampled else ref["tokens"]) if replay else None  # what replay walks along
    features, disagree = _replay_features(target, ids, along, config, prefix, sampled) if replay else (None, None)
    answer = ref["tokens"] if ref is not None else vanilla.tokens if vanilla is not None else None
    rows = {name: EvalRows([], [], []) for name in proposers}
    for name, proposer in proposers.items():
        replayed = replay_generate(target, proposer, ids, along, config.max_new_tokens, stop=stop,
                                   features=features, prefix=prefix, sampled=sampled) if replay else None
        engine = not replay or (is_timed and (timed is None or name in timed))
        spec = _engine(target, proposer, ids, config, index, turn, stop, answer, prefix) if engine else None
        _append(rows[name], key, len(ids), replayed, spec, vanilla if engine and is_timed else None, answer,
                disagree, greedy=config.temperature == 0)
    return rows, answer


def evaluate(target: TargetModel, proposer: Proposer, prompts: list[Prompt], config: EvalConfig,
             references: list[dict] | None = None, progress: bool = True,
             fmt: PromptFormat = PromptFormat()) -> EvalRows:
    """`evaluate_many` for one proposer."""
    return evaluate_many(target, {"": proposer}, prompts, config, references, progress, fmt)[""]


def _replay_features(target, ids, reference: list[int], config: EvalConfig, prefix: SharedPrefix | None,
                     sampled: bool = False) -> tuple[torch.Tensor, int | None]:
    """Replay's features of a turn and how many reference tokens are not the target's one-pass argmax
    (with on_mismatch "error" any such token raises: `taps.replay.checked_features`); a sampled reference
    (T > 0) is not compared with the argmax (None)."""
    if sampled:
        return sample_features(target, ids, reference, prefix), None
    if config.on_mismatch == "error":
        return checked_features(target, ids, reference, prefix=prefix), 0
    features, disagree = reference_features(target, ids, reference, prefix=prefix)
    return features, len(disagree)


def _engine(target, proposer, ids, config, index, turn, stop, answer: list[int] | None,
            prefix: SharedPrefix | None) -> Generation:
    """The speculative run of a turn; at T=0 with on_mismatch "error", raises unless it equals the target's
    greedy output (`answer`: the reference, or the vanilla run of the turn)."""
    spec = speculative_generate(target, proposer, ids, config.max_new_tokens, config.temperature,
                                _generator(config.seed, index, turn), stop=stop, prefix=prefix)
    if (config.temperature == 0 and config.on_mismatch == "error" and answer is not None
            and spec.tokens != answer):
        raise RuntimeError(f"prompt {index}, turn {turn}: greedy speculative output differs from the target's "
                           "own greedy output; speculative decoding must be lossless (this is a bug)")
    return spec


def _append(rows: EvalRows, key: dict, prompt_tokens: int, replayed: Generation | None, spec: Generation | None,
            vanilla: Generation | None, answer: list[int] | None, disagree: int | None, greedy: bool = True) -> None:
    """One turn's rows. `replayed`: replay's run of the turn (None without replay), `spec`: the engine's (None
    where it did not run), `vanilla` set on a turn timed side by side with the engine, `answer` the target's
    own output the next turn is conditioned on (None for a last turn without reference or vanilla run),
    `disagree` the reference tokens unlike the target's one-pass argmax (None when no greedy reference was
    replayed). The records kept are the engine's at T=0 (`greedy`, where replay's are compared with them:
    `replay_matches`) and replay's at T > 0 (every composition on the same sample); `identical` is only
    recorded at T=0 (samples differ from the greedy answer by design). The engine's own counts
    (`engine_new_tokens`, `engine_passes`) go with its timing."""
    nan = float("nan")
    kept = spec if spec is not None and (greedy or replayed is None) else replayed
    rows.cycles += [{**key, **c} for c in kept.cycles]
    rows.nodes += [{**key, **n} for n in kept.nodes]
    rows.candidates += [{**key, **c} for c in (replayed or kept).candidates]
    both = replayed is not None and spec is not None
    rows.turns.append({
        **key, "mode": "engine" if kept is spec else "replay", "timed": vanilla is not None,
        "prompt_tokens": prompt_tokens, "new_tokens": len(kept.tokens) - 1, "passes": len(kept.cycles),
        "drafter_steps": kept.drafter_steps,
        "seconds": spec.seconds - spec.prefill_seconds if spec else nan,
        "prefill_seconds": spec.prefill_seconds if spec else nan,
        "engine_new_tokens": len(spec.tokens) - 1 if spec else None, "engine_passes": len(spec.cycles) if spec else None,
        "vanilla_new_tokens": len(vanilla.tokens) - 1 if vanilla else len(answer) - 1 if answer else None,
        "vanilla_seconds": vanilla.seconds - vanilla.prefill_seconds if vanilla else nan,
        "vanilla_prefill_seconds": vanilla.prefill_seconds if vanilla else nan,
        "identical": spec.tokens == answer if greedy and spec and answer is not None else None,
        "replay_matches": _same_records(replayed, spec) if both and greedy else None,
        "replay_new_tokens": len(replayed.tokens) - 1 if both else None,
        "replay_passes": len(replayed.cycles) if both else None,
        "reference_mismatches": disagree,
    })


def _reference(refs: dict, key: dict, ids: torch.Tensor) -> dict:
    ref = refs.get((key["prompt"], key["turn"]))
    if ref is None or ref["prompt_ids"] != ids.tolist():
        what = "has no row for" if ref is None else "holds another prompt text for"
        raise ValueError(f"the reference {what} prompt {key['prompt']!r} turn {key['turn']}; build references "
                         "(the `reference` rule, taps.evaluate.reference_rows) for the same target, benchmark, "
                         "prompts, max_new_tokens and seed")
    return ref
