# Drafters -> evaluation per composition x benchmark x temperature -> tables (all Parquet).
# With evaluate.replay, the target's greedy output is computed once per target x benchmark
# (rule reference) and every T=0 evaluation replays its compositions against it.


rule reference:
    input:
        target=target_json("{target}"),
        fewshot=lambda w: benchmark_fewshot(w.target, w.benchmark),
    output:
        f"{RESULTS}/references/{{target}}/{{benchmark}}.parquet",
    log:
        f"{RESULTS}/logs/reference/{{target}}/{{benchmark}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/reference/{{target}}/{{benchmark}}.tsv"
    params:
        benchmark=lambda w: json_arg(config["evaluate"]["benchmarks"][w.benchmark]),
        settings=lambda w: json_arg(reference_settings(w.benchmark)),
        data_dir=config["data_dir"],
        seed=config["seed"],
        dev=device_args(eval_threads()),
    threads: eval_threads()
    resources:
        **job_resources("reference", mem_mb=8000, runtime=120, gpu=True),
    conda:
        ENV
    shell:
        "python workflow/scripts/reference.py --target {input.target} --benchmark-name {wildcards.benchmark} "
        "--benchmark {params.benchmark} --settings {params.settings} --data-dir {params.data_dir} "
        "--fewshot '{input.fewshot}' --seed {params.seed} {params.dev} --out {output} > {log} 2>&1"


# One job per target x backbone x benchmark x temperature evaluates every composition configured at
# that temperature: the target is loaded once, and each turn's vanilla run and replay features are
# shared (taps.evaluate.evaluate_many); each composition keeps its own output directory. Greedy
# (T=0) and sampled (T>0, evaluate.sampled) evaluations are two rules, as they declare different
# compositions.
# Compositions of released drafters only (targets.<target>.released) are evaluated by jobs of their own,
# evaluate_<kind>_released, so evaluating them needs no training: `snakemake ... released`.
# Compositions evaluated on some backbones only (their `backbones`) are evaluated by jobs of their own too,
# evaluate_<kind>_<backbones> (eval_rules), on those backbones.
_KINDS = {"greedy": r"0(\.0*)?", "sampled": r"(?!0(\.0*)?$)[0-9]+(\.[0-9]*)?"}
_RULES = [(kind, temperature, released, *rule) for (kind, temperature), released in
          itertools.product(_KINDS.items(), (False, True)) for rule in eval_rules(kind == "greedy", released)]
for _kind, _temperature, _released, _name, _backbones, _compositions in _RULES:
    _suffix = "_released" if _released else ""
    _part = _name.removeprefix(f"evaluate_{_kind}{_suffix}")  # the backbones of a group of its own, in its files

    rule:
        name:
            _name
        input:
            target=target_json("{target}"),
            drafters=lambda w, c=_compositions: list(eval_drafters(w.target, w.backbone, c).values()),
            tuned=lambda w, c=_compositions: list(tuned_inputs(w.target, w.backbone, c).values()),
            references=lambda w: reference_input(w.target, w.benchmark, w.temperature),
            fewshot=lambda w: benchmark_fewshot(w.target, w.benchmark),
        output:
            [directory(eval_dir("{target}", "{backbone}", c, "{benchmark}", "{temperature}")) for c in _compositions],
        wildcard_constraints:
            temperature=_temperature,
            backbone="|".join(map(re.escape, _backbones)),
        log:
            f"{RESULTS}/logs/evaluate{_suffix}/{{target}}/{{backbone}}/{{benchmark}}/T{{temperature}}{_part}.log",
        benchmark:
            f"{RESULTS}/benchmarks/evaluate{_suffix}/{{target}}/{{backbone}}/{{benchmark}}/T{{temperature}}{_part}.tsv"
        params:
            compositions=lambda w, c=_compositions: json_arg({n: config["evaluate"]["compositions"][n] for n in c}),
            drafters=lambda w, c=_compositions: " ".join(f"{n}={d}" for n, d in eval_drafters(w.target, w.backbone, c).items()),
            tuned=lambda w, c=_compositions: " ".join(f"{n}={j}" for n, j in tuned_inputs(w.target, w.backbone, c).items()),
            benchmark=lambda w: json_arg(config["evaluate"]["benchmarks"][w.benchmark]),
            settings=lambda w: json_arg(eval_settings(w.temperature, w.benchmark, w.backbone)),
            data_dir=config["data_dir"],
            seed=config["seed"],
            dev=device_args(eval_threads()),
        threads: eval_threads()
        resources:
            **job_resources("evaluate", mem_mb=8000, runtime=240, gpu=True),
        conda:
            ENV
        shell:
            "python workflow/scripts/evaluate.py --target {input.target} --drafters {params.drafters} "
            "--compositions {params.compositions} --tuned {params.tuned} --benchmark-name {wildcards.benchmark} --benchmark {params.benchmark} "
            "--temperature {wildcards.temperature} --settings {params.settings} --data-dir {params.data_dir} "
            "--references '{input.references}' --fewshot '{input.fewshot}' "
            "--seed {params.seed} {params.dev} --label {wildcards.target} {wildcards.backbone} "
            "--outs {output} > {log} 2>&1"


# Trees sized for the machine (taps.tune): for each drafter a composition evaluates with `tree: tuned`, the
# (total_tokens, depth) of the most predicted tokens/s, from development prompts of the source it trained on
# (the last conversations of the source's seeded order: never trained on, never benchmark prompts) and pass
# costs measured at the evaluation's thread count.
rule tune_tree:
    input:
        target=target_json("{target}"),
        drafter=lambda w: drafter_dir(w.target, w.backbone, w.drafter),
        fewshot=lambda w: fewshot_json(w.target, tune_source(w.drafter)),
    output:
        tune_json("{target}", "{backbone}", "{drafter}"),
    log:
        f"{RESULTS}/logs/tune_tree/{{target}}/{{backbone}}/{{drafter}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/tune_tree/{{target}}/{{backbone}}/{{drafter}}.tsv"
    params:
        source=lambda w: tune_source(w.drafter),
        reading=lambda w: json_arg(source_reading(tune_source(w.drafter))),
        trained=lambda w: source_count(tune_source(w.drafter)),
        settings=lambda w: json_arg(tune_settings()),
        data_dir=config["data_dir"],
        seed=config["seed"],
        dev=device_args(eval_threads()),
    threads: eval_threads()
    resources:
        **job_resources("tune_tree", mem_mb=8000, runtime=60, gpu=True),
    conda:
        ENV
    shell:
        "python workflow/scripts/tune_tree.py --target {input.target} --drafter {input.drafter} "
        "--source-name {params.source} --source {params.reading} --trained {params.trained} "
        "--fewshot {input.fewshot} --settings {params.settings} --data-dir {params.data_dir} "
        "--seed {params.seed} {params.dev} --out {output} > {log} 2>&1"
