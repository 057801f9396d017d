"""Checkpoints of a training run: the resumable state, and the drafter kept by validation.

Resumable state. state/step-XXXXXXXX holds all a run carries from step to step: the drafter's
weights, the optimizer's state (AdamW moments and step counts, tensors to safetensors, scalars
and param groups to JSON), the torch RNG states (CPU and every CUDA device), the validation rows
so far, and the run's identity (`run_identity`: the config less its bookkeeping fields, the
number of sequences, a hash of their lengths, the planned step count). A state whose identity
differs from the run's is refused rather than resumed. Only the newest state is kept.

Atomic writes. A state or best/ directory is written under a temporary name and renamed into
place (os.replace), as is every JSON file; older states are dropped only after the rename. A run
killed at any moment leaves its previous complete state; a half-written temporary is ignored
and cleared by the next save.

Bit-identical resume. Training splits, orders and noises the data, and schedules the lr, from
(seed, epoch, step) alone (see `taps.train`); everything else a step reads is in the state,
saved exactly (safetensors) and restored before the next step. So a run resumed from its last
state performs the same computations as an uninterrupted one and ends with the same weights,
validation rows and selected drafter.

Best checkpoint. After an epoch's validation, if its row is the best so far by select_by
(`select_best`: earliest on ties, never a NaN), the drafter is saved to best/epoch-XXXX with a
selection.json. One directory per epoch: the best epoch named by the last saved state's
validation rows is never overwritten by a later one, so a resume always finds it; `prune_best`
drops the others after each save_state. At the end `save_final` puts the best epoch's weights
(the last ones without validation) in drafter/ with train_config.json and selection.json.

Dependencies point one way: this module never imports `taps.train`; the config reaches it as a
dataclass instance, read through `asdict` and its select_by field.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from taps.drafter import Drafter

BOOKKEEPING_FIELDS = ("save_every",)  # TrainConfig fields that do not change the trained weights


# --- run identity ----------------------------------------------------------------------------
def run_identity(config: Any, shards: Any, plan: list) -> dict:
    """What a saved state must match to be resumed: the config (less bookkeeping) and the data.

    config: a dataclass (TrainConfig); shards: sized, with the `lengths` of its sequences.
    """
    settings = {k: v for k, v in json.loads(json.dumps(asdict(config))).items() if k not in BOOKKEEPING_FIELDS}
    lengths = hashlib.sha256(repr(list(shards.lengths)).encode()).hexdigest()[:16]
    return {"config": settings, "sequences": len(shards), "lengths": lengths, "steps": len(plan)}


# --- resumable training state ----------------------------------------------------------------
def save_state(out_dir: str, steps_done: int, drafter: Drafter, optimizer: torch.optim.Optimizer, run: dict,
               val_rows: list[dict]) -> None:
    """Write state/step-XXXXXXXX atomically (a temporary directory renamed), then drop older ones.

    Weights, optimizer tensors and RNG states go to safetensors; scalars, the validation rows
    so far and the run's identity (config, data) to JSON. The lr schedule and the noise are
    pure functions of the step: no state.
    """
    root = os.path.join(out_dir, "state")
    tmp = os.path.join(root, f".tmp-{steps_done:08d}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    opt = optimizer.state_dict()
    save_file({k: v.detach().contiguous().cpu() for k, v in drafter.state_dict().items()},
              os.path.join(tmp, "drafter.safetensors"))
    save_file({f"{i}.{k}": v.contiguous().cpu() for i, s in opt["state"].items() for k, v in s.items()
               if torch.is_tensor(v)}, os.path.join(tmp, "optimizer.safetensors"))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda.{d}": s for d, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, os.path.join(tmp, "rng.safetensors"))
    scalars = {str(i): {k: v for k, v in s.items() if not torch.is_tensor(v)} for i, s in opt["state"].items()}
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump({"steps_done": steps_done, "run": run, "param_groups": opt["param_groups"], "scalars": scalars,
                   "validation": val_rows}, f)
    final = os.path.join(root, f"step-{steps_done:08d}")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for name in os.listdir(root):  # older states and leftovers of interrupted saves
        if name != os.path.basename(final):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _newest_state(out_dir: str) -> tuple[str, dict] | None:
    """(path, state.json) of the newest complete state, or None."""
    root = os.path.join(out_dir, "state")
    names = sorted(n for n in os.listdir(root) if n.startswith("step-")) if os.path.isdir(root) else []
    if not names:
        return None
    with open(os.path.join(root, names[-1], "state.json")) as f:
        return os.path.join(root, names[-1]), json.load(f)


def clear_other_run(out_dir: str, run: dict) -> bool:
    """Clear a saved run of other settings (state/, best/ and the metrics) so the run starts afresh; True if
    there was one. Called by one process only."""
    newest = _newest_state(out_dir)
    if newest is None or newest[1]["run"] == run:
        return False
    for name in ("state", "best"):
        shutil.rmtree(os.path.join(out_dir, name), ignore_errors=True)
    for name in ("metrics.parquet", "val_metrics.parquet"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out_dir, name))
    return True


def load_state(out_dir: str, drafter: Drafter, optimizer: torch.optim.Optimizer,
               run: dict) -> tuple[int, list[dict]]:
    """Restore the newest complete state into drafter and optimizer; returns (steps done, validation rows).

    A state of another run is refused (`clear_other_run` starts afresh instead).
    """
    newest = _newest_state(out_dir)
    if newest is None:
        return 0, []
    path, meta = newest
    if meta["run"] != run:
        raise ValueError(f"{out_dir!r} holds a run with other settings; use a new out_dir (or restart).\n"
                         f"saved: {meta['run']}\nnow:   {run}")
    drafter.load_state_dict(load_file(os.path.join(path, "drafter.safetensors")))
    state: dict[int, dict] = {int(i): dict(s) for i, s in meta["scalars"].items()}
    for key, value in load_file(os.path.join(path, "optimizer.safetensors")).items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    rng = load_file(os.path.join(path, "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng[k] for k in sorted(k for k in rng if k.startswith("cuda."))])
    return meta["steps_done"], meta["validation"]


# --- the best-by-validation drafter ----------------------------------------------------------
def select_best(val_rows: list[dict], select_by: str) -> dict | None:
    """The validation row of the best epoch by `select_by` (the earliest on ties, never a NaN); None without rows."""
    sign = 1 if select_by == "loss" else -1  # loss: lower is better; agreements: higher
    return min(val_rows, key=lambda row: (math.isnan(row[select_by]), sign * row[select_by])) if val_rows else None


def selection(row: dict, select_by: str) -> dict:
    """What selection.json records of the kept epoch."""
    return {"select_by": select_by, "best_epoch": row["epoch"], "step": row["step"], "value": row[select_by]}


def _best_dir(out_dir: str, epoch: int) -> str:
    return os.path.join(out_dir, "best", f"epoch-{epoch:04d}")


def _write_json(path: str, value: dict) -> None:
    """Write JSON atomically (a temporary file renamed)."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(tmp, path)


def save_best(out_dir: str, drafter: Drafter, row: dict, select_by: str) -> None:
    """The drafter as it is after epoch row["epoch"] in best/epoch-XXXX (a temporary directory renamed).

    One directory per epoch: the best epoch a saved state refers to is never overwritten by a
    later epoch, so a resume always finds it; `prune_best` drops the others after each save_state.
    """
    final = _best_dir(out_dir, row["epoch"])
    tmp = os.path.join(os.path.dirname(final), f".tmp-{os.path.basename(final)}")
    shutil.rmtree(tmp, ignore_errors=True)
    drafter.save(tmp)
    _write_json(os.path.join(tmp, "selection.json"), selection(row, select_by))
    shutil.rmtree(final, ignore_errors=True)  # only a run killed after its last state leaves one here
    os.replace(tmp, final)


def prune_best(out_dir: str, best: dict | None) -> None:
    """Drop every best/ directory but the one of the `best` row."""
    root = os.path.join(out_dir, "best")
    keep = None if best is None else os.path.basename(_best_dir(out_dir, best["epoch"]))
    for name in os.listdir(root) if os.path.isdir(root) else []:
        if name != keep:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def save_final(out_dir: str, drafter: Drafter, config: Any, best: dict | None) -> None:
    """The kept drafter in out_dir/drafter (weights in config.checkpoint_dtype), with the resolved TrainConfig beside it.

    With validation (`best`, a validation row) it is the best epoch's, and selection.json names
    it; without, the last weights.
    """
    directory = os.path.join(out_dir, "drafter")
    if best is not None:
        drafter.load_state_dict(Drafter.load(_best_dir(out_dir, best["epoch"]), drafter.target,
                                               dtype=drafter.fc.weight.dtype).state_dict())
    drafter.save(directory, getattr(torch, config.checkpoint_dtype))
    _write_json(os.path.join(directory, "train_config.json"), asdict(config))
    if best is not None:
        _write_json(os.path.join(directory, "selection.json"), selection(best, config.select_by))
