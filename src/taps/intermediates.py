"""Reading the workflow's intermediates: a missing, truncated or unreadable file is one error that
names the file and its fix.

Every file one rule writes and another reads (training data, feature shards, drafter checkpoints,
evaluation rows, references, tables, JSON side files) is read inside `reading`. A killed job, a
full disk or a half-finished copy can leave such a file behind, and Snakemake reruns nothing while
it exists; the libraries' own errors (pyarrow's ArrowInvalid, safetensors' SafetensorError, a
JSONDecodeError) say nothing of where the file came from. So they become one CorruptIntermediate
that names the file and the fix: delete it, or force the rule that writes it to run again.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow as pa
from safetensors import SafetensorError

WRITERS = {  # kind of intermediate -> the workflow rule that writes it (workflow/rules/*.smk)
    "target spec": "target",
    "few-shot exemplars": "fewshot",
    "training data": "prepare_data (responses: dataset) or regenerate (responses: target)",
    "draft vocabulary": "draft_vocab",
    "feature metadata": "extract_features",  # a feature directory's meta.json
    "feature vocabulary": "extract_features",  # its vocab.safetensors
    "feature shard": "extract_features",
    "drafter checkpoint": "train (average for avg-* drafters, import_drafter for released ones)",
    "evaluation output": "evaluate_greedy (T=0) or evaluate_sampled (T>0), *_released for released drafters, "
                         "*_<backbones> for compositions on some backbones only",
    "references": "reference",
    "table": "aggregate",
    "interpolation distances": "interpolation_distances",
    "tuned tree": "tune_tree",
}
# what the libraries raise on a truncated or garbled file (ArrowInvalid and JSONDecodeError are ValueErrors)
READ_ERRORS = (pa.ArrowException, SafetensorError, json.JSONDecodeError, UnicodeDecodeError, EOFError, OSError)


class CorruptIntermediate(ValueError):
    """An intermediate file that is truncated or unreadable."""


class MissingIntermediate(FileNotFoundError):
    """An intermediate file that is not there."""


def fix(kind: str, delete: str | Path | None = None) -> str:
    """How to get a good `kind` back: delete `delete` (the file or its output directory), or force its rule."""
    first = f"delete {delete}, or " if delete else ""
    return f"{first}rerun the rule that writes it: snakemake --forcerun {WRITERS[kind]}"


@contextmanager
def reading(path: str | Path, kind: str, output: str | Path | None = None) -> Iterator[str]:
    """Read `path`, an intermediate of `kind` (a key of WRITERS), in the body; `output`: the rule's
    output directory that holds it, if any (deleting the file alone would not make the rule rerun)."""
    path = str(path)
    if not os.path.isfile(path):
        raise MissingIntermediate(f"no {kind} at {path}; {fix(kind, output)}")
    if os.path.getsize(path) == 0:
        raise CorruptIntermediate(f"{kind} {path} is empty (0 bytes: truncated); {fix(kind, output or path)}")
    try:
        yield path
    except (CorruptIntermediate, MissingIntermediate):
        raise
    except READ_ERRORS as err:
        raise CorruptIntermediate(f"{kind} {path} is truncated or unreadable ({type(err).__name__}: {err}); "
                                  f"{fix(kind, output or path)}") from err


def read_json(path: str | Path, kind: str, output: str | Path | None = None):
    """The JSON value in `path` (see `reading`)."""
    with reading(path, kind, output), open(path, encoding="utf-8") as f:
        return json.load(f)


def read_parquet(path: str | Path, kind: str, output: str | Path | None = None) -> pd.DataFrame:
    """The frame in the Parquet file `path` (see `reading`)."""
    with reading(path, kind, output):
        return pd.read_parquet(path)
