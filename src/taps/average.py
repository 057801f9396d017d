"""Weight averaging: the point-wise weighted mean of N drafters of one target.

The paper's weak composition baseline: average the parameters of drafters trained on
different data. It is backbone-agnostic (EAGLE-2 and HASS drafters share the architecture);
the result keeps the first checkpoint's DrafterConfig. Every floating tensor becomes
Σ_k w_k θ_k, accumulated in float64 and rounded once to its dtype, so averaging a drafter with
itself returns it bit for bit. Non-floating tensors (d2t) must be equal and are copied.

Weights default to uniform; given weights must be non-negative and sum to 1 (within 1e-6).
They are refused rather than normalised, so that a mistyped config cannot silently change
the experiment. Checkpoints are refused, naming the checkpoint and the field, when they were
made for another target (fingerprint), or their tensors' names, shapes or dtypes, or their
draft vocabularies (d2t) differ from the first's.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import torch
from safetensors import safe_open

from taps.drafter import WEIGHTS, Drafter
from taps.intermediates import reading
from taps.target import TargetModel


def check_weights(n: int, weights: Sequence[float] | None) -> list[float]:
    """Uniform weights by default; else n non-negative weights summing to 1."""
    if n < 1:
        raise ValueError("average: no checkpoints given")
    if weights is None:
        return [1.0 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f"average: {len(weights)} weights for {n} checkpoints")
    if any(w < 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(f"average: weights must be non-negative and sum to 1, got {weights} (sum {sum(weights)})")
    return weights


def _tensor_specs(directory: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) of a checkpoint's tensors, read from the safetensors header."""
    path = os.path.join(directory, WEIGHTS)
    with reading(path, "drafter checkpoint", directory), safe_open(path, "pt") as f:
        return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}


def check_compatible(dirs: Sequence[str]) -> None:
    """Refuse checkpoints whose tensors differ in names, shapes or dtypes from the first's."""
    first = _tensor_specs(dirs[0])
    for directory in dirs[1:]:
        specs = _tensor_specs(directory)
        for name in sorted(set(first) | set(specs)):
            if name not in specs or name not in first:
                where = directory if name not in specs else dirs[0]
                raise ValueError(f"average: checkpoint {where!r} has no tensor {name!r}")
            if specs[name] != first[name]:
                raise ValueError(f"average: checkpoint {directory!r} tensor {name!r} has shape/dtype "
                                 f"{specs[name]}, but {dirs[0]!r} has {first[name]}")


def average_drafters(dirs: Sequence[str], target: TargetModel, weights: Sequence[float] | None = None) -> Drafter:
    """The weighted point-wise mean of the drafters saved in `dirs`, all made for `target`."""
    weights = check_weights(len(dirs), weights)
    check_compatible(dirs)
    drafters = [Drafter.load(d, target) for d in dirs]  # refuses another target, naming dir and field
    for directory, drafter in zip(dirs[1:], drafters[1:]):
        if not torch.equal(drafter.d2t, drafters[0].d2t):
            raise ValueError(f"average: checkpoint {directory!r} has another draft vocabulary (d2t) "
                             f"than {dirs[0]!r}")
    states = [d.state_dict() for d in drafters]
    mean = {}
    for name, first in states[0].items():
        if not first.is_floating_point():
            mean[name] = first.clone()
            continue
        acc = sum(w * s[name].double() for w, s in zip(weights, states))  # Σ_k w_k θ_k in float64
        mean[name] = acc.to(first.dtype)
    out = Drafter(target, drafters[0].config, d2t=drafters[0].d2t)
    out.load_state_dict(mean)
    return out


def parameter_distance(a: Drafter, b: Drafter) -> float:
    """Root-mean-square difference of two drafters' floating tensors (the same names and shapes): how far
    apart they sit in weight space, per parameter."""
    sa, sb = a.state_dict(), b.state_dict()
    total, count = 0.0, 0
    for name, x in sa.items():
        if x.is_floating_point():
            total += float(((x.double() - sb[name].double()) ** 2).sum())
            count += x.numel()
    return (total / count) ** 0.5 if count else 0.0


def initial_drafter(drafter: Drafter, target: TargetModel) -> Drafter:
    """The random initialisation `drafter`'s weights started from: a fresh drafter of its config (seed, draft
    vocabulary, architecture). A HASS drafter warm-started from EAGLE-2 traces back to the same one."""
    return Drafter(target, drafter.config, d2t=drafter.d2t, dtype=torch.float32)


def line_distances(first: str, second: str, target: TargetModel) -> dict[str, float]:
    """For an interpolation line between the drafters saved in `first` and `second`: their distance, and each
    one's distance from its own initialisation (`parameter_distance`)."""
    a, b = (Drafter.load(d, target, dtype=torch.float32) for d in (first, second))
    return {"between": parameter_distance(a, b), "first_from_init": parameter_distance(a, initial_drafter(a, target)),
            "second_from_init": parameter_distance(b, initial_drafter(b, target)),
            "inits_apart": parameter_distance(initial_drafter(a, target), initial_drafter(b, target))}


def average_checkpoints(dirs: Sequence[str], out_dir: str, target: TargetModel,
                        weights: Sequence[float] | None = None) -> Drafter:
    """Average the checkpoints in `dirs` and save the result to `out_dir` (with average.json: sources, weights)."""
    weights = check_weights(len(dirs), weights)
    drafter = average_drafters(dirs, target, weights)
    drafter.save(out_dir)
    tmp = os.path.join(out_dir, ".average.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"sources": [os.path.abspath(d) for d in dirs], "weights": weights}, f, indent=2)
    os.replace(tmp, os.path.join(out_dir, "average.json"))
    return drafter
