# Per-source features (or, with features: online, the training Parquets) -> drafters per target x backbone x
# mixture, and point-wise averaged checkpoints. A job with several GPUs trains data-parallel under torchrun.
# Only drafter/ is declared: the resumable training state beside it (state/, metrics.parquet)
# survives a killed job, so re-running the rule continues from the last saved step.


rule train:
    input:
        target=target_json("{target}"),
        sources=train_sources,
        warm=warm_start,
    output:
        directory(f"{RESULTS}/drafters/{{target}}/{{backbone}}/{{dataset}}/drafter"),
    log:
        f"{RESULTS}/logs/train/{{target}}/{{backbone}}/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{target}}/{{backbone}}/{{dataset}}.tsv"
    wildcard_constraints:
        dataset="(?!avg-)[^/]+",
    params:
        sources=train_source_args,
        launch=launcher(job_resources("train", 0, 0, True)["gpu"]),
        settings=lambda w: json_arg(train_settings(w.backbone, w.dataset)),
        workdir=lambda w: f"{RESULTS}/drafters/{w.target}/{w.backbone}/{w.dataset}",
        dev=device_args(),
    threads: config.get("threads", 2)
    resources:
        **job_resources("train", mem_mb=12000, runtime=240, gpu=True),
    conda:
        ENV
    shell:
        "{params.launch} workflow/scripts/train.py --target {input.target} {params.sources} "
        "--settings {params.settings} --warm-start '{input.warm}' --workdir {params.workdir} {params.dev} "
        "> {log} 2>&1"


rule average:
    input:
        target=target_json("{target}"),
        members=lambda w: [drafter_dir(w.target, w.backbone, d) for d in average_members(w.name)],
    output:
        directory(f"{RESULTS}/drafters/{{target}}/{{backbone}}/avg-{{name}}/drafter"),
    log:
        f"{RESULTS}/logs/average/{{target}}/{{backbone}}/{{name}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/average/{{target}}/{{backbone}}/{{name}}.tsv"
    params:
        weights=lambda w: f"--weights {average_weights(w.name)}" if average_weights(w.name) else "",
    threads: 1
    resources:
        **job_resources("average", mem_mb=4000, runtime=10, gpu=False),
    conda:
        ENV
    shell:
        "python workflow/scripts/average.py --target {input.target} --members {input.members} {params.weights} "
        "--out {output} > {log} 2>&1"


# A released EAGLE-format drafter (a directory or hub id: targets.<target>.released.<backbone>.<name>) checked
# against the target and stored as our own checkpoint, in place of a trained one of that name.
rule import_drafter:
    input:
        target=target_json("{target}"),
    output:
        directory(f"{RESULTS}/released/{{target}}/{{backbone}}/{{name}}/drafter"),
    log:
        f"{RESULTS}/logs/import_drafter/{{target}}/{{backbone}}/{{name}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/import_drafter/{{target}}/{{backbone}}/{{name}}.tsv"
    params:
        source=lambda w: released(w.target, w.backbone)[w.name],
    threads: 1
    resources:
        **job_resources("import_drafter", mem_mb=8000, runtime=30, gpu=False),
    conda:
        ENV
    shell:
        "python workflow/scripts/import_drafter.py --target {input.target} --source '{params.source}' "
        "--backbone {wildcards.backbone} --out {output} > {log} 2>&1"


# A drafter in the layout SGLang loads for --speculative-algorithm EAGLE (config.json naming
# LlamaForCausalLMEagle, EAGLE's weight names, token_map.pt for a reduced vocabulary): the config's `export`.
rule export_drafter:
    input:
        target=target_json("{target}"),
        drafter=lambda w: drafter_dir(w.target, w.backbone, w.name),
    output:
        directory(f"{RESULTS}/export/{{target}}/{{backbone}}/{{name}}"),
    log:
        f"{RESULTS}/logs/export_drafter/{{target}}/{{backbone}}/{{name}}.log",
    threads: 1
    resources:
        **job_resources("export_drafter", mem_mb=8000, runtime=30, gpu=False),
    conda:
        ENV
    shell:
        "python workflow/scripts/export_drafter.py --target {input.target} --drafter {input.drafter} "
        "--out {output} > {log} 2>&1"
