"""An evaluation job's finished turns, kept on disk so that a killed job resumes where it stopped.

`evaluate_many` hands every finished turn to a `PartialRun`: the turn's raw rows for each
composition and the target's answer the next turn is conditioned on. Each turn is one JSON file,
written atomically, in a directory beside the job's outputs (outside them: Snakemake deletes an
incomplete job's outputs before it reruns the job, and must not delete this). Run again, the job
reads the finished turns back instead of decoding them, and goes on from the first unfinished one;
every turn's generators are seeded by (seed, prompt, turn), so the rows are those an uninterrupted
run writes. The directory carries a digest of everything the rows depend on (settings, drafter and
reference bytes); written under another digest, it is discarded, as training discards a foreign
checkpoint. The job deletes it once its outputs are written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

DIGEST = "digest.json"


def digest(settings: dict, files: list[str | Path] = ()) -> str:
    """sha256 over the JSON of `settings` and the bytes of `files` (a directory: every file under it)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for item in map(Path, files):
        for path in sorted(item.rglob("*")) if item.is_dir() else [item]:
            if path.is_file():
                h.update(str(path.relative_to(item) if item.is_dir() else path.name).encode())
                h.update(path.read_bytes())
    return h.hexdigest()


class PartialRun:
    """The finished turns of one job under `directory`, valid for `key` (a `digest`)."""

    def __init__(self, directory: str | Path, key: str):
        self.directory = Path(directory)
        stamp = self.directory / DIGEST
        if self.directory.exists() and not (stamp.is_file() and _read(stamp) == {"digest": key}):
            shutil.rmtree(self.directory)  # written under other settings, or unreadable: start over
        self.directory.mkdir(parents=True, exist_ok=True)
        if not stamp.is_file():
            _write(stamp, {"digest": key})
        self.resumed = 0  # turns read back rather than decoded

    def _path(self, prompt: int, turn: int) -> Path:
        return self.directory / f"{prompt:05d}-{turn:03d}.json"

    def load(self, prompt: int, turn: int) -> dict | None:
        """The turn saved by `save` ({answer, rows}), or None if it is not finished (or its file is damaged)."""
        path = self._path(prompt, turn)
        if not path.is_file():
            return None
        saved = _read(path)
        if saved is not None:
            self.resumed += 1
        return saved

    def save(self, prompt: int, turn: int, answer: list[int] | None, rows: dict[str, dict[str, list[dict]]]) -> None:
        _write(self._path(prompt, turn), {"answer": answer, "rows": rows})

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write(path: Path, value) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(value, f)
    os.replace(f.name, path)
