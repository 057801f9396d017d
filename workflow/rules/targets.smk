# A target becomes a resolved, fingerprinted description (and, for smoke runs, a built model).


rule target:
    output:
        f"{RESULTS}/targets/{{target}}/target.json",
    log:
        f"{RESULTS}/logs/target/{{target}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/target/{{target}}.tsv"
    params:
        data_dir=config["data_dir"],
        cfg=lambda w: json_arg(target_cfg(w.target)),
        model_dir=f"{RESULTS}/targets/{{target}}/model",
    threads: config.get("threads", 2)
    resources:
        **job_resources("target", mem_mb=8000, runtime=30, gpu=False),
    conda:
        ENV
    shell:
        "python workflow/scripts/target.py --name {wildcards.target} --config {params.cfg} "
        "--data-dir {params.data_dir} --model-dir {params.model_dir} --out {output} > {log} 2>&1"
