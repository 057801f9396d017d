# Shared helpers: output paths, the resolved config per target, the command prefix.

import itertools
import json
import os
import re
import shlex
from pathlib import Path

RESULTS = config["results"]
SRC = Path(workflow.basedir) / "src"
ENV = "../../envs/taps.yaml"

# every script runs against this checkout's library, in the base env or a --use-conda env alike
shell.prefix(f"export PYTHONPATH={SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")  # braces doubled for shell formatting


def target_cfg(target):
    return config["targets"][target]


def target_json(target):
    return f"{RESULTS}/targets/{target}/target.json"


def released(target, backbone):
    """name -> source (a directory or hub id) of the EAGLE-format drafters a target's config takes as released."""
    return target_cfg(target).get("released", {}).get(backbone, {})


def drafter_dir(target, backbone, name):
    """A drafter: trained on a mixture (a dataset name), averaged (avg-<name>), or imported from a released
    checkpoint, which takes the place of a trained one of the same name."""
    if name in released(target, backbone):
        return f"{RESULTS}/released/{target}/{backbone}/{name}/drafter"
    return f"{RESULTS}/drafters/{target}/{backbone}/{name}/drafter"


def check_drafter_names():
    """Every drafter the compositions, averages and exports name exists for each target and backbone, and
    every trained drafter to export has EAGLE's architecture."""
    named = {d for c in config.get("evaluate", {}).get("compositions", {}).values() for d in c["drafters"]}
    named |= {d for a in config.get("averages", {}) for d in average_members(a)} | set(config.get("export", []))
    unseeded = sorted(set(config.get("init_seeds", {})) - set(config["datasets"]))
    if unseeded:
        raise ValueError(f"init_seeds names {unseeded}, which are not datasets (datasets: {', '.join(config['datasets'])})")
    for target in config["targets"]:
        for backbone in config["backbones"]:
            known = set(config["datasets"]) | {f"avg-{a}" for a in config.get("averages", {})}
            unknown = sorted(named - known - set(released(target, backbone)))
            if unknown:
                raise ValueError(f"drafters {unknown} are named for target {target!r}, backbone {backbone!r}, but are "
                                 f"no dataset, no avg-<average> and not in targets.{target}.released.{backbone}")
            trained = [n for n in config.get("export", []) if n not in released(target, backbone)]
            if trained and train_settings(backbone).get("architecture", "taps") != "eagle":
                raise ValueError(f"export names {trained}, trained with train.{backbone}.architecture 'taps': only "
                                 "'eagle' has the layout SGLang loads; set it, or export released drafters only")


def json_arg(value):
    """A config value as one shell-quoted JSON argument."""
    return shlex.quote(json.dumps(value))


# keys of a source entry that say how its answers are written, not how it is read (taps.data.Source)
ANSWER_KEYS = ("responses", "fewshot", "turns")


def source_reading(source):
    return {k: v for k, v in config["sources"][source].items() if k not in ANSWER_KEYS}


def training_sources():
    """Sources some training mixture takes conversations from, in config order."""
    return [s for s in config["sources"] if any(s in mix for mix in config["datasets"].values())]


def source_count(source):
    """Conversations a source contributes: the most any mixture takes (smaller counts take a prefix)."""
    return max(mix[source] for mix in config["datasets"].values() if source in mix)


def source_data(target, source):
    """A source's training rows: dataset text (rule prepare_data) or target-written (rule regenerate)."""
    responses = config["sources"][source].get("responses", "dataset")
    return f"{RESULTS}/data/{target}/{responses}/{source}.parquet"


def fewshot_json(target, source):
    return f"{RESULTS}/prompts/{target}/{source}.json"


def answers_args(target, source, responses):
    """Arguments of workflow/scripts/answers.py for one source (settings from the `answers` section)."""
    entry = config["sources"][source]
    settings = {**config.get("answers", {}), "responses": responses, "turns": entry.get("turns", "first"),
                "max_length": target_cfg(target).get("max_length", 512)}
    return (f"--source-name {source} --source {json_arg(source_reading(source))} --count {source_count(source)} "
            f"--settings {json_arg(settings)}")


def feature_parts(target, dataset):
    """(feature directory, conversations taken) of each source of a training mixture."""
    return [(f"{RESULTS}/features/{target}/{source}", count) for source, count in config["datasets"][dataset].items()]


def benchmark_fewshot(target, benchmark):
    """The few-shot exemplars a benchmark is prompted with (evaluate.fewshot names their source), or none."""
    source = config["evaluate"].get("fewshot", {}).get(benchmark)
    return fewshot_json(target, source) if source else []


def composition_backbones(composition):
    """The backbones a composition is evaluated on: its own `backbones`, else every backbone."""
    return config["evaluate"]["compositions"][composition].get("backbones", config["backbones"])


def interpolation_backbones():
    """The backbones the interpolation lines are evaluated and measured on (default: every backbone)."""
    return config.get("interpolation_backbones", config["backbones"])


def drafters_on(backbone):
    """The datasets and averages trained on a backbone: all of them, except those that only compositions
    evaluated on other backbones use (directly, or as an average's members) and that are not exported."""
    users = {}
    for name, spec in config.get("evaluate", {}).get("compositions", {}).items():
        for d in spec["drafters"]:
            members = average_members(d[4:]) if d.startswith("avg-") and d[4:] in config.get("averages", {}) else []
            for used in (d, *members):
                users.setdefault(used, []).append(name)
    names = list(config["datasets"]) + [f"avg-{a}" for a in config.get("averages", {})]
    return [n for n in names if n not in users or n in config.get("export", [])
            or any(backbone in composition_backbones(c) for c in users[n])]


def drafter_outputs():
    """Every drafter of every target and backbone: trained, averaged, and imported (released) in their place."""
    return [drafter_dir(target, backbone, d) for target in config["targets"] for backbone in config["backbones"]
            for d in dict.fromkeys(drafters_on(backbone) + list(released(target, backbone)))]


def export_dir(target, backbone, name):
    return f"{RESULTS}/export/{target}/{backbone}/{name}"


def export_outputs():
    """The drafters the config's `export` names, in SGLang's EAGLE layout, for every target and backbone."""
    return [export_dir(t, b, name) for t in config["targets"] for b in config["backbones"]
            for name in config.get("export", [])]


def device_args(threads=None):
    return f"--device {config.get('device', 'auto')} --threads {threads or config.get('threads', 2)}"


def eval_threads():
    """Threads of a reference or evaluation job (evaluate.threads, else the top-level threads)."""
    return config.get("evaluate", {}).get("threads", config.get("threads", 2))


def train_settings(backbone, dataset=None):
    """TrainConfig fields of a backbone's training; with `dataset`, its init_seed where init_seeds gives one."""
    init = {"init_seed": config["init_seeds"][dataset]} if dataset in config.get("init_seeds", {}) else {}
    return {"backbone": backbone, "seed": config["seed"], **config["train"].get(backbone, {}), **init}


def average_members(name):
    """The dataset names averaged into avg-<name> (config averages: a list, or {members, weights})."""
    spec = config["averages"][name]
    return spec["members"] if isinstance(spec, dict) else spec


def average_weights(name):
    """The weights of avg-<name>'s members as --weights arguments ('' for uniform)."""
    spec = config["averages"][name]
    return " ".join(str(w) for w in spec["weights"]) if isinstance(spec, dict) else ""


def warm_start(w):
    """HASS may start from the EAGLE-2 drafter of the same data (as the reference recipe does)."""
    if w.backbone == "hass" and train_settings("hass").get("warm_start"):
        return drafter_dir(w.target, "eagle2", w.dataset)
    return []


def is_greedy(temperature):
    return float(temperature) == 0


def eval_plan(temperature):
    """(backbones, compositions, benchmarks, prompts) evaluated at a temperature: everything at T=0;
    at T > 0 what evaluate.sampled narrows it to."""
    ev = config["evaluate"]
    narrow = {} if is_greedy(temperature) else ev.get("sampled", {})
    return (narrow.get("backbones", config["backbones"]), narrow.get("compositions", list(ev["compositions"])),
            narrow.get("benchmarks", list(ev["benchmarks"])), narrow.get("prompts", ev.get("prompts")))


def is_released(composition):
    """Whether a composition combines released drafters only, for every target and backbone."""
    names = config["evaluate"]["compositions"][composition]["drafters"]
    return all(n in released(t, b) for n in names for t in config["targets"] for b in config["backbones"])


def eval_rules(greedy, released):
    """(rule name, backbones, compositions) of each evaluation rule at T=0 (greedy) or T > 0, of released drafters'
    compositions or the others: the compositions grouped by the backbones they are evaluated on, among those
    evaluated at that temperature. The group on all of them is evaluate_<kind>[_released]; another group's rule
    name ends in its backbones."""
    at = [t for t in config.get("evaluate", {}).get("temperatures", []) if is_greedy(t) == greedy]
    backbones, compositions, _, _ = eval_plan(at[0]) if at else ([], [], [], None)
    groups = {}
    for c in compositions:
        on = tuple(b for b in backbones if b in composition_backbones(c))
        if is_released(c) == released and on:
            groups.setdefault(on, []).append(c)
    name = f"evaluate_{'greedy' if greedy else 'sampled'}{'_released' if released else ''}"
    return [(name if on == tuple(backbones) else f"{name}_{'_'.join(on)}", on, cs) for on, cs in groups.items()]


def eval_dir(target, backbone, composition, benchmark, temperature):
    return f"{RESULTS}/eval/{target}/{backbone}/{composition}/{benchmark}/T{temperature}"


def evaluation_outputs(released_only=False):
    """Every evaluation directory; with released_only, those of compositions of released drafters only."""
    ev = config.get("evaluate")
    if not ev:
        return []
    out = []
    for temp in ev["temperatures"]:
        backbones, compositions, benchmarks, _ = eval_plan(temp)
        out += [eval_dir(t, b, c, bench, temp) for t in config["targets"] for b in backbones for c in compositions
                if (is_released(c) or not released_only) and b in composition_backbones(c) for bench in benchmarks]
    return out


def eval_drafters(target, backbone, compositions):
    """name=directory of every drafter the compositions combine (datasets or avg-<name>), once each."""
    names = dict.fromkeys(d for c in compositions for d in config["evaluate"]["compositions"][c]["drafters"])
    return {name: drafter_dir(target, backbone, name) for name in names}


def reference_input(target, benchmark, temperature):
    """The greedy references, when evaluate.replay is on: a T=0 evaluation replays against them, and at any
    temperature a later turn is conditioned on the target's greedy answer they hold (the same contexts)."""
    if config["evaluate"].get("replay"):
        return f"{RESULTS}/references/{target}/{benchmark}.parquet"
    return []


def tune_json(target, backbone, drafter):
    return f"{RESULTS}/tune/{target}/{backbone}/{drafter}.json"


def tune_source(drafter):
    """The source whose development prompts a tuned drafter is tuned on: the first of its dataset's sources."""
    mix = config["datasets"].get(drafter, {})
    if not mix:
        raise ValueError(f"tree: tuned needs a drafter trained on a dataset, and {drafter!r} is not one of "
                         f"datasets ({', '.join(config['datasets'])})")
    return next(iter(mix))


def tune_settings():
    """taps.tune.TuneConfig fields: the tune section, with the evaluation's turn length and top_k."""
    ev = config["evaluate"]
    return {**config.get("tune", {}), "max_new_tokens": ev.get("max_new_tokens", 128),
            "top_k": ev.get("tree", {}).get("top_k", 10)}


def tuned_inputs(target, backbone, compositions):
    """name=tuned JSON of each composition evaluated with `tree: tuned` (its one drafter's)."""
    specs = {c: s for c in compositions if (s := config["evaluate"]["compositions"][c]).get("tree") == "tuned"}
    for c, s in specs.items():
        if s["composition"] != "single":
            raise ValueError(f"composition {c!r}: tree: tuned is for single drafters, not {s['composition']!r}")
    return {c: tune_json(target, backbone, s["drafters"][0]) for c, s in specs.items()}


def benchmark_prompts(prompts, benchmark):
    """evaluate.prompts (or evaluate.sampled.prompts) for one benchmark: a count for all, or a mapping benchmark ->
    count (None: no limit, every prompt)."""
    if not isinstance(prompts, dict):
        return prompts
    if benchmark not in prompts:
        raise ValueError(f"the prompts mapping {prompts} names no count for benchmark {benchmark!r}: give one for "
                         "every evaluated benchmark, or a single count for all")
    return prompts[benchmark]


def check_sampled_prompts():
    """T > 0 evaluates the first prompts of T=0's sample (nested seeded samples), so it cannot ask for more; a
    prompts mapping names every evaluated benchmark, and no other."""
    ev = config.get("evaluate", {})
    benchmarks, counts = list(ev.get("benchmarks", {})), {"evaluate.prompts": ev.get("prompts"),
                                                          "evaluate.sampled.prompts": ev.get("sampled", {}).get("prompts")}
    for key, prompts in counts.items():
        unknown = sorted(set(prompts) - set(benchmarks)) if isinstance(prompts, dict) else []
        if unknown:
            raise ValueError(f"{key} names {', '.join(unknown)}, not in evaluate.benchmarks "
                             f"({', '.join(benchmarks)}): fix the name or drop it")
    for benchmark in benchmarks:
        greedy, sampled = (benchmark_prompts(prompts, benchmark) for prompts in counts.values())
        if sampled and greedy and ev.get("replay") and sampled > greedy:
            raise ValueError(f"evaluate.sampled.prompts ({sampled}) exceeds evaluate.prompts ({greedy}) on "
                             f"{benchmark}: with replay, T > 0 turns are conditioned on T=0's references, which cover "
                             "evaluate.prompts prompts")


def eval_settings(temperature=0, benchmark=None, backbone=None):
    """prompts, max_new_tokens, replay, timed_prompts, timed_compositions, prefix_cache, on_mismatch, fp32_logits and
    tree of the evaluate section, as an evaluation at `temperature` of `backbone` on `benchmark` uses them: no timed
    prompts where evaluate.timed_benchmarks or evaluate.timed_backbones leave the benchmark or backbone out, at T > 0
    evaluate.sampled's timed_prompts where given; timed_compositions only with replay, which leaves the engine to the
    timed compositions (without it every turn runs the engine)."""
    ev = config["evaluate"]
    settings = {k: v for k, v in ev.items() if k not in (
        "compositions", "benchmarks", "temperatures", "fewshot", "sampled", "threads", "timed_benchmarks",
        "timed_backbones")}
    if not is_greedy(temperature) and "timed_prompts" in ev.get("sampled", {}):
        settings["timed_prompts"] = ev["sampled"]["timed_prompts"]
    if (benchmark is not None and benchmark not in ev.get("timed_benchmarks", [benchmark])
            or backbone is not None and backbone not in ev.get("timed_backbones", [backbone])):
        settings["timed_prompts"] = 0
    if not ev.get("replay"):
        settings.pop("timed_compositions", None)
    return {**settings, "prompts": benchmark_prompts(eval_plan(temperature)[3], benchmark)}


def reference_settings(benchmark):
    """The settings the vanilla references depend on: prompts, max_new_tokens, and fp32_logits (the logits
    the greedy output is read from); on_mismatch only matters where an output is compared, so it is left out
    and changing it does not rebuild the references."""
    return {k: v for k, v in eval_settings(0, benchmark).items()
            if k in ("prompts", "max_new_tokens", "fp32_logits", "prefix_cache")}


# the tidy frames, tables and figures that report.smk writes
FRAMES = ("evaluations", "prompts", "depth", "nodes", "routing", "replay")
TABLE_NAMES = ("headline", "main", "compositions", "routing", "speed", "temperature", "replay")
FIGURE_NAMES = ("tau_T0", "confidence_entropy", "routing_oracle", "depth", "temperature", "interpolation")
PAPER = config.get("paper_results", "data/paper/taps_reported.csv")


def report_outputs():
    """The final outputs once evaluation is configured: tables, figures and findings."""
    if not config.get("evaluate"):
        return []
    tables = TABLE_NAMES + (("interpolation",) if config.get("interpolations") else ())
    return ([f"{RESULTS}/tables/{name}.{ext}" for name in tables for ext in ("csv", "md", "tex")]
            + [f"{RESULTS}/figures/{name}.{ext}" for name in FIGURE_NAMES for ext in ("png", "pdf")]
            + [f"{RESULTS}/findings.md"])


def job_resources(name, mem_mb, runtime, gpu):
    """mem_mb, runtime (minutes) and gpu of a job: the defaults given where it is declared (sized for the CPU
    configs; gpu True asks for the config's `gpus`, as the jobs that run the target do), each replaced by the
    config's resources.<name> entry where it sets one (paper scale: config/paper.yaml)."""
    own = config.get("resources", {}).get(name, {})
    return {"mem_mb": own.get("mem_mb", mem_mb), "runtime": own.get("runtime", runtime),
            "gpu": own.get("gpus", config.get("gpus", 0) if gpu else 0)}


def online(target):
    """Whether the target computes training features inside the training job (features: online)."""
    return target_cfg(target).get("features", "offline") == "online"


def vocab_file(target):
    return f"{RESULTS}/vocab/{target}.safetensors"


def train_sources(w):
    """What a drafter trains from: its mixture's per-source feature directories or, with online features, the
    sources' training Parquets and the draft vocabulary."""
    if online(w.target):
        return [source_data(w.target, s) for s in config["datasets"][w.dataset]] + [vocab_file(w.target)]
    return [d for d, _ in feature_parts(w.target, w.dataset)]


def train_source_args(w):
    """The training script's arguments naming train_sources(w), with the conversations taken from each source."""
    counts = " ".join(str(c) for c in config["datasets"][w.dataset].values())
    if online(w.target):
        data = " ".join(source_data(w.target, s) for s in config["datasets"][w.dataset])
        return f"--data {data} --vocab {vocab_file(w.target)} --counts {counts}"
    return f"--features {' '.join(d for d, _ in feature_parts(w.target, w.dataset))} --counts {counts}"


def launcher(gpus):
    """python, or torchrun with one process per GPU when a job has several (data-parallel training)."""
    return f"torchrun --standalone --nproc_per_node={gpus}" if gpus > 1 else "python"


def expand_interpolations():
    """config `interpolations` (pair -> [first, second] dataset names): on each line, for every alpha of
    `interpolation_alphas`, the average avg-<pair>@<alpha> = (1 - alpha) first + alpha second and a single
    composition <pair>@<alpha> over it (an existing average of the same members and weights is reused), at T=0;
    the endpoints are the single compositions of first and second, added where the config has none. The
    compositions it adds are evaluated on `interpolation_backbones` (default: every backbone).
    Returns {pair: {alpha: composition}} with the endpoints at 0 and 1 (findings (i), the interpolation figure)."""
    compositions, averages = config["evaluate"]["compositions"], config.setdefault("averages", {})
    on = {"backbones": interpolation_backbones()} if "interpolation_backbones" in config else {}

    def single(drafter):
        return next((n for n, c in compositions.items() if c["composition"] == "single" and c["drafters"] == [drafter]),
                    None)

    lines = {}
    for pair, (first, second) in config.get("interpolations", {}).items():
        line = {}
        for end, alpha in ((first, 0.0), (second, 1.0)):
            line[alpha] = single(end) or end
            compositions.setdefault(line[alpha], {"composition": "single", "drafters": [end], **on})
        for alpha in config.get("interpolation_alphas", [0.5]):
            weights = [1 - alpha, alpha]
            same = next((a for a in averages if average_members(a) == [first, second]
                         and [float(w) for w in (average_weights(a).split() or [0.5, 0.5])] == weights), None)
            if same is None:
                same = f"{pair}@{alpha:g}"
                averages[same] = {"members": [first, second], "weights": weights}
            line[float(alpha)] = single(f"avg-{same}") or f"{pair}@{alpha:g}"
            compositions.setdefault(line[float(alpha)], {"composition": "single", "drafters": [f"avg-{same}"], **on})
        lines[pair] = dict(sorted(line.items()))
    return lines


CONFIGURED = set(config.get("evaluate", {}).get("compositions", {}))  # the config's own, before the lines add theirs
INTERPOLATIONS = expand_interpolations()  # before the checks: they see the averages and compositions it adds
# the lines' inner points the lines added (not a configured composition such as averaged): drawn, not in the main table
INTERPOLATED = {n for line in INTERPOLATIONS.values() for a, n in line.items() if 0 < a < 1 and n not in CONFIGURED}


def line_points(target, backbone):
    """pair -> {alpha: drafter directory} of every interpolation line's points (their single compositions')."""
    compositions = config["evaluate"]["compositions"]
    return {pair: {a: drafter_dir(target, backbone, compositions[c]["drafters"][0]) for a, c in line.items()}
            for pair, line in INTERPOLATIONS.items()}


def line_val_data(target):
    """dataset -> its feature parts, for the lines' ends: their held-out sequences score every point of a line
    (none for a target whose features are computed online, inside training)."""
    if online(target):
        return {}
    return {d: feature_parts(target, d) for pair in config.get("interpolations", {}).values() for d in pair}


def check_config_names():
    """Every name the config refers to is defined and every data file it names is there: one error naming the
    key, before any job runs (benchmarks/config_fuzz.py tries hundreds of broken configs against this and the
    schema)."""
    def refuse(key, names, known, what):
        unknown = sorted(set(names) - set(known), key=str)
        if unknown:
            raise ValueError(f"{key} names {', '.join(map(repr, unknown))}, which {'is' if len(unknown) == 1 else 'are'} "
                             f"not {what} (known: {', '.join(map(str, known)) or 'none'})")

    def find(key, spec):  # a jsonl source or benchmark's file (taps.data.resolve_data_file, without importing torch)
        path = (spec or {}).get("path")
        if path and (spec or {}).get("kind") != "hub" and not (Path(config["data_dir"]) / path).is_file():
            raise ValueError(f"{key}.path: file not found: {Path(config['data_dir']) / path}. Put the file there, or "
                             f"set the path (absolute, or relative to data_dir, now {config['data_dir']!r})")

    for name, mix in config["datasets"].items():
        refuse(f"datasets.{name}", mix, config["sources"], "a source in `sources`")
    for name, spec in config["sources"].items():
        find(f"sources.{name}", spec)
    ev = config.get("evaluate")
    if not ev:
        return
    compositions, benchmarks = list(ev["compositions"]), list(ev["benchmarks"])
    for name, spec in ev["benchmarks"].items():
        find(f"evaluate.benchmarks.{name}", spec)
    for benchmark, source in ev.get("fewshot", {}).items():
        refuse(f"evaluate.fewshot.{benchmark}", [source], config["sources"], "a source in `sources`")
    refuse("interpolation_backbones", config.get("interpolation_backbones", []), config["backbones"], "a backbone")
    for name, spec in ev["compositions"].items():
        refuse(f"evaluate.compositions.{name}.backbones", spec.get("backbones", []), config["backbones"], "a backbone")
    for kind, known in (("compositions", compositions), ("backbones", config["backbones"]), ("benchmarks", benchmarks)):
        refuse(f"evaluate.timed_{kind}", ev.get(f"timed_{kind}", []), known, f"one of evaluate's {kind}")
        refuse(f"evaluate.sampled.{kind}", ev.get("sampled", {}).get(kind, []), known, f"one of evaluate's {kind}")
    for key, value in config.get("findings", {}).items():  # the claims' roles (domains maps benchmarks to domains)
        names = ([] if key == "domains" else value.values() if isinstance(value, dict) else [value]
                 if isinstance(value, str) else value if isinstance(value, list) else [])
        refuse(f"findings.{key}", names, compositions, "a composition in evaluate.compositions")


check_drafter_names()
check_sampled_prompts()
check_config_names()
