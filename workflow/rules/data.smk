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
        data_dir=config["data_dir"],
        seed=config["seed"],
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
        "python workflow/scripts/prepare_data.py --target {input.target} --sources {params.sources} "
        "--data-dir {params.data_dir} --max-length {params.max_length} --seed {params.seed} "
        "--out {output} > {log} 2>&1"


rule draft_vocab:
    # one draft vocabulary per target, over all its training mixtures: drafters that share it can
    # be averaged and compared node for node
    input:
        target=target_json("{target}"),
        data=lambda w: [f"{RESULTS}/data/{w.target}/{d}.parquet" for d in config["datasets"]],
    output:
        f"{RESULTS}/vocab/{{target}}.safetensors",
    log:
        f"{RESULTS}/logs/draft_vocab/{{target}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/draft_vocab/{{target}}.tsv"
    params:
        size=lambda w: target_cfg(w.target).get("draft_vocab_size") or 0,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
        gpu=0,
    conda:
        ENV
    shell:
        "python workflow/scripts/draft_vocab.py --target {input.target} --data {input.data} "
        "--size {params.size} --out {output} > {log} 2>&1"


rule extract_features:
    input:
        target=target_json("{target}"),
        data=f"{RESULTS}/data/{{target}}/{{dataset}}.parquet",
        vocab=f"{RESULTS}/vocab/{{target}}.safetensors",
    output:
        directory(f"{RESULTS}/features/{{target}}/{{dataset}}"),
    log:
        f"{RESULTS}/logs/extract_features/{{target}}/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_features/{{target}}/{{dataset}}.tsv"
    params:
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
        "python workflow/scripts/extract_features.py --target {input.target} --data {input.data} "
        "--vocab {input.vocab} --dtype {params.dtype} --shard-tokens {params.shard} "
        "{params.dev} --out {output} > {log} 2>&1"
