# Raw sources -> tokenised training mixtures (Parquet) -> target features (sharded safetensors).


rule prepare_data:
    input:
        target=target_json("{target}"),
    output:
        f"{RESULTS}/data/{{target}}/{{dataset}}.parquet",
    log:
        f"{RESULTS}/logs/prepare_data/{{target}}/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data/{{target}}/{{dataset}}.tsv"
    params:
        sources=lambda w: json_arg(
            {name: {**config["sources"][name], "count": count} for name, count in config["datasets"][w.dataset].items()}
        ),
        max_length=lambda w: target_cfg(w.target).get("max_length", 512),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    conda:
        ENV
    shell:
        "{PY} workflow/scripts/prepare_data.py --target {input.target} --sources {params.sources} "
        "--data-dir {config[data_dir]} --max-length {params.max_length} --seed {config[seed]} "
        "--out {output} > {log} 2>&1"


rule extract_features:
    input:
        target=target_json("{target}"),
        data=f"{RESULTS}/data/{{target}}/{{dataset}}.parquet",
    output:
        directory(f"{RESULTS}/features/{{target}}/{{dataset}}"),
    log:
        f"{RESULTS}/logs/extract_features/{{target}}/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_features/{{target}}/{{dataset}}.tsv"
    params:
        vocab=lambda w: target_cfg(w.target).get("draft_vocab_size") or 0,
        dtype=lambda w: target_cfg(w.target).get("feature_dtype", "bfloat16"),
        shard=lambda w: target_cfg(w.target).get("shard_tokens", 65536),
        dev=device_args(),
    threads: config.get("threads", 2)
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config.get("gpus", 0),
    conda:
        ENV
    shell:
        "{PY} workflow/scripts/extract_features.py --target {input.target} --data {input.data} "
        "--draft-vocab-size {params.vocab} --dtype {params.dtype} --shard-tokens {params.shard} "
        "{params.dev} --out {output} > {log} 2>&1"
