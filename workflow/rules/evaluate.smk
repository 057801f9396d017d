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
        settings=lambda w: json_arg({k: v for k, v in eval_settings().items() if k in ("prompts", "max_new_tokens")}),
        data_dir=config["data_dir"],
        seed=config["seed"],
        dev=device_args(),
    threads: config.get("threads", 2)
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config.get("gpus", 0),
    conda:
        ENV
    shell:
        "python workflow/scripts/reference.py --target {input.target} --benchmark-name {wildcards.benchmark} "
        "--benchmark {params.benchmark} --settings {params.settings} --data-dir {params.data_dir} "
        "--fewshot '{input.fewshot}' --seed {params.seed} {params.dev} --out {output} > {log} 2>&1"


rule evaluate:
    input:
        target=target_json("{target}"),
        drafters=lambda w: composition_drafters(w.target, w.backbone, w.composition),
        references=lambda w: reference_input(w.target, w.benchmark, w.temperature),
        fewshot=lambda w: benchmark_fewshot(w.target, w.benchmark),
    output:
        directory(f"{RESULTS}/eval/{{target}}/{{backbone}}/{{composition}}/{{benchmark}}/T{{temperature}}"),
    log:
        f"{RESULTS}/logs/evaluate/{{target}}/{{backbone}}/{{composition}}/{{benchmark}}/T{{temperature}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{target}}/{{backbone}}/{{composition}}/{{benchmark}}/T{{temperature}}.tsv"
    params:
        composition=lambda w: json_arg(config["evaluate"]["compositions"][w.composition]),
        benchmark=lambda w: json_arg(config["evaluate"]["benchmarks"][w.benchmark]),
        settings=lambda w: json_arg(eval_settings()),
        data_dir=config["data_dir"],
        seed=config["seed"],
        dev=device_args(),
    threads: config.get("threads", 2)
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config.get("gpus", 0),
    conda:
        ENV
    shell:
        "python workflow/scripts/evaluate.py --target {input.target} --drafters {input.drafters} "
        "--composition {params.composition} --benchmark-name {wildcards.benchmark} --benchmark {params.benchmark} "
        "--temperature {wildcards.temperature} --settings {params.settings} --data-dir {params.data_dir} "
        "--references '{input.references}' --fewshot '{input.fewshot}' "
        "--seed {params.seed} {params.dev} --label {wildcards.target} {wildcards.backbone} {wildcards.composition} "
        "--out {output} > {log} 2>&1"


rule tables:
    input:
        evaluation_outputs(),
    output:
        f"{RESULTS}/tables/tau.parquet",
    log:
        f"{RESULTS}/logs/tables.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables.tsv"
    params:
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
        gpu=0,
    conda:
        ENV
    shell:
        "python workflow/scripts/tables.py --evals {input} --seed {params.seed} --out {output} > {log} 2>&1"
