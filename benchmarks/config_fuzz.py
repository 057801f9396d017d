"""Config fuzzing: seeded mutations of a config, each planned by Snakemake (a dry run, in process).

    python benchmarks/config_fuzz.py [--config config/config.yaml] [--n 200] [--seed 0]

Each mutation changes one key of the config: a wrong type, a negative or zero size, an unknown
composition, dataset, source, backbone or benchmark name, an empty list, a data file that does not
exist, a temperature below 0, or an unknown key. Snakemake then plans the whole DAG (`-n`, nothing
runs). Every outcome is one of

- `plans`: the DAG plans; fine for a mutation that may be valid (a zero, an empty list, a type the
  schema also takes);
- `refused`: planning stops with one message that names the mutated key (the schema's, or the
  workflow's own check) and no Python traceback;
- `unnamed`: a refusal whose message does not name the key; `traceback`: any other exception (a
  KeyError, TypeError...: the user sees a Python traceback). Defects, always.

A mutation that cannot be valid (a negative size, T < 0, an unknown name, a missing file, an unknown
key) that plans is counted as `unrefused`, also a defect. Prints N, the count of each outcome per
kind, and every defect with its seed, so a failure reproduces with `--only <i>`.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import random
import sys
import tempfile
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MUST_REFUSE = ("negative", "negative temperature", "unknown name", "missing file", "unknown key")
KINDS = ("wrong type", "zero", "empty list") + MUST_REFUSE
# keys left alone: where outputs go (a mutation must never write outside the scratch directory)
FIXED = {("results",)}


def leaves(node, path=()):
    """Every (path, value) under a config: dict keys and list indices, containers included."""
    out = [(path, node)] if path else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += leaves(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += leaves(v, path + (i,))
    return out


def key_name(path) -> str:
    """The name a message should give: the innermost dict key of the path."""
    return str(next(p for p in reversed(path) if isinstance(p, str)))


def get_at(cfg, path):
    for p in path:
        cfg = cfg[p]
    return cfg


def set_at(cfg, path, value):
    get_at(cfg, path[:-1])[path[-1]] = value


def _other_type(value, rng):
    choices = {bool: ["yes", 3], int: ["many", [1], 2.5], float: ["fast", [0.1]], str: [7, ["x"], {"a": 1}],
               list: ["x", {"a": 1}, 5], dict: ["x", [1, 2], 3], type(None): [[1], True]}
    return rng.choice(choices[type(value)])


def _name_slots(cfg):
    """(path, value) pairs where a config names another thing: a composition, dataset, source, backbone..."""
    ev = cfg.get("evaluate", {})
    slots = [(("backbones", i), b) for i, b in enumerate(cfg.get("backbones", []))]
    for d, mix in cfg.get("datasets", {}).items():
        slots += [(("datasets", d, "<source>"), s) for s in mix]
    for a, members in cfg.get("averages", {}).items():
        slots += [(("averages", a, i), m) for i, m in enumerate(members)]
    for c, spec in ev.get("compositions", {}).items():
        slots.append((("evaluate", "compositions", c, "composition"), spec["composition"]))
        slots += [(("evaluate", "compositions", c, "drafters", i), d) for i, d in enumerate(spec["drafters"])]
    slots += [(("evaluate", "fewshot", b), s) for b, s in ev.get("fewshot", {}).items()]
    slots += [(("evaluate", "benchmarks", "<name>"), b) for b in ev.get("benchmarks", {})]
    for key in ("timed_compositions", "timed_backbones", "timed_benchmarks"):
        slots += [(("evaluate", key, i), v) for i, v in enumerate(ev.get(key, []))]
    for key, names in ev.get("sampled", {}).items():
        if isinstance(names, list):
            slots += [(("evaluate", "sampled", key, i), v) for i, v in enumerate(names)]
    for key, names in cfg.get("findings", {}).items():
        if isinstance(names, list):
            slots += [(("findings", key, i), v) for i, v in enumerate(names)]
    return slots


def mutate(cfg: dict, kind: str, rng: random.Random):
    """(path named, description, mutated config) for one mutation of `kind`, or None where the config has no slot."""
    cfg = copy.deepcopy(cfg)
    flat = [(p, v) for p, v in leaves(cfg) if p[:1] not in FIXED]
    numeric = [(p, v) for p, v in flat if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if kind == "wrong type":
        path, value = rng.choice(flat)
        new = _other_type(value, rng)
    elif kind in ("negative", "zero"):
        numeric = [(p, v) for p, v in numeric if v != 0]  # a zero made zero would change nothing
        if not numeric:
            return None
        path, value = rng.choice(numeric)
        new = 0 if kind == "zero" else (-1 if isinstance(value, int) else -0.5)
    elif kind == "negative temperature":
        path, new = ("evaluate", "temperatures"), [rng.choice([-1, -0.5, -1e-3])]
    elif kind == "empty list":
        lists = [(p, v) for p, v in flat if isinstance(v, list)]
        path, value = rng.choice(lists)
        new = []
    elif kind == "missing file":
        files = [p + ("path",) for p, v in flat if isinstance(v, dict) and isinstance(v.get("path"), str)]
        if files and rng.random() < 0.5:
            path = rng.choice(files)
        else:
            name = rng.choice(list(cfg["evaluate"]["benchmarks"]))
            path = ("evaluate", "benchmarks", name)
            set_at(cfg, path, {"path": "no_such_benchmark.jsonl"})
            return path + ("path",), f"{'/'.join(map(str, path))} = {{path: no_such_benchmark.jsonl}}", cfg
        new = "no_such_file.jsonl"
    elif kind == "unknown name":
        path, old = rng.choice(_name_slots(cfg))
        new = f"no-such-{old}"
        if path[-1] in ("<source>", "<name>"):  # a dict key names it: rename the key
            parent = path[:-1]
            node = get_at(cfg, parent)
            node[new] = node.pop(old)
            return parent, f"{'/'.join(map(str, parent))}: key {old!r} -> {new!r}", cfg
    elif kind == "unknown key":
        dicts = [(p, v) for p, v in flat if isinstance(v, dict)] + [((), cfg)]
        parent, _ = rng.choice(dicts)
        path, new = parent + ("no_such_key",), 1
    else:
        raise ValueError(f"unknown mutation kind {kind!r}")
    set_at(cfg, path, new)
    return path, f"{'/'.join(map(str, path))} = {new!r}", cfg


def plan(config_path: Path, workdir: Path = ROOT) -> tuple[str, str]:
    """('plans', '') or (exception type, message): Snakemake's dry run of the whole DAG under a config file."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, Quietness, ResourceSettings

    sink = io.StringIO()
    try:
        with redirect_stdout(sink), redirect_stderr(sink), \
                SnakemakeApi(OutputSettings(dryrun=True, enable_file_logging=False, quiet={Quietness.ALL})) as api:
            workflow = api.workflow(resource_settings=ResourceSettings(cores=2),
                                    config_settings=ConfigSettings(configfiles=[config_path]),
                                    snakefile=workdir / "Snakefile", workdir=workdir)
            workflow.dag(DAGSettings()).execute_workflow(executor="dryrun")
    except BaseException as e:  # noqa: BLE001 - every way planning can end is an outcome here
        return type(e).__name__, f"{type(e).__name__}: {e}"
    return "plans", ""


# how a refusal ends planning: the schema's (WorkflowError "Error validating config file") or the workflow's own
# checks (ValueError); anything else (KeyError, TypeError, InputFunctionException...) reaches the user as a traceback
REFUSALS = ("WorkflowError", "ValueError")
DEFECTS = ("unnamed", "traceback", "unrefused")


def classify(kind: str, path, outcome: str, message: str) -> str:
    """plans | refused | unnamed (a refusal that does not name the key) | traceback | unrefused (a mutation that
    cannot be valid, planned). `outcome` is "plans" or the exception's type name."""
    if outcome == "plans":
        return "unrefused" if kind in MUST_REFUSE else "plans"
    if outcome not in REFUSALS or "Traceback" in message:
        return "traceback"
    return "refused" if key_name(path) in message else "unnamed"


def fuzz(config: Path, n: int, seed: int, only: int | None = None, log=print, verbose: bool = False) -> Counter:
    """Run n seeded mutations of `config` (the i-th seeded by (seed, i)); returns Counter of (kind, outcome)."""
    base = yaml.safe_load(config.read_text(encoding="utf-8"))
    counts = Counter()
    with tempfile.TemporaryDirectory(prefix="taps-fuzz-") as tmp:
        base["results"] = str(Path(tmp) / "results")  # nothing is written by a dry run; never into results/
        for i in range(n) if only is None else [only]:
            rng = random.Random(f"{seed}:{i}")
            kind = KINDS[i % len(KINDS)]
            mutation = mutate(base, kind, rng)
            if mutation is None:
                counts[(kind, "skipped")] += 1
                continue
            path, what, cfg = mutation
            config_path = Path(tmp) / f"mutation_{i}.yaml"
            config_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
            outcome, message = plan(config_path)
            verdict = classify(kind, path, outcome, message)
            counts[(kind, verdict)] += 1
            if verdict in DEFECTS or only is not None:
                first = message.strip().splitlines()[:12]
                log(f"[{i}] {kind}: {what} -> {verdict}\n    " + "\n    ".join(first))
            elif verbose:
                log(f"[{i}] {kind}: {what} -> {verdict}: {message.strip().splitlines()[-1] if message else ''}")
    return counts


def summary(counts: Counter, n: int) -> str:
    outcomes = ("plans", "refused", "skipped") + DEFECTS
    lines = [f"N = {n} mutations", f"{'kind':22s}" + "".join(f"{o:>11s}" for o in outcomes)]
    for kind in KINDS:
        lines.append(f"{kind:22s}" + "".join(f"{counts[(kind, o)]:11d}" for o in outcomes))
    lines.append(f"{'all':22s}" + "".join(f"{sum(c for (k, o), c in counts.items() if o == out):11d}"
                                          for out in outcomes))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", type=int, help="run mutation i alone and print its message")
    parser.add_argument("--verbose", action="store_true", help="print every mutation and its outcome")
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args()
    counts = fuzz(args.config, args.n, args.seed, args.only, verbose=args.verbose)
    print(summary(counts, args.n if args.only is None else 1))
    if args.json:
        args.json.write_text(json.dumps({f"{k}|{o}": c for (k, o), c in counts.items()}, indent=1))
    return int(any(o in DEFECTS for _, o in counts))


if __name__ == "__main__":
    sys.exit(main())
