# Evaluations -> tidy frames (aggregate) -> the paper's tables, figures and a verdict on every claim.
# Every output a reader looks at is flagged for `snakemake --report results/report.html`.

rule aggregate:
    input:
        evaluation_outputs(),
    output:
        [f"{RESULTS}/tables/{frame}.parquet" for frame in FRAMES],
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    params:
        seed=config["seed"],
    threads: 1
    resources:
        **job_resources("aggregate", mem_mb=4000, runtime=20, gpu=False),
    conda:
        ENV
    shell:
        "python workflow/scripts/aggregate.py --evals {input} --seed {params.seed} --outs {output} > {log} 2>&1"


rule tables:
    input:
        evaluations=f"{RESULTS}/tables/evaluations.parquet",
        replay=f"{RESULTS}/tables/replay.parquet",
        prompts=f"{RESULTS}/tables/prompts.parquet",
        paper=PAPER if PAPER and Path(PAPER).is_file() else [],
    output:
        [report(f"{RESULTS}/tables/{name}.{ext}", caption=f"../report/table_{name}.rst", category="Tables",
                subcategory=name) for name in TABLE_NAMES for ext in ("csv", "md", "tex")],
    log:
        f"{RESULTS}/logs/tables.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables.tsv"
    params:
        out_dir=lambda w, output: os.path.dirname(output[0]),
        # the interpolation's inner points are drawn (figure interpolation), not tabled
        order=json_arg([c for c in config.get("evaluate", {}).get("compositions", {}) if c not in INTERPOLATED]),
        experts=json_arg(config.get("findings", {}).get("experts", {"math": "math", "chat": "chat"})),
        seed=config["seed"],
    threads: 1
    resources:
        **job_resources("tables", mem_mb=2000, runtime=10, gpu=False),
    conda:
        ENV
    shell:
        "python workflow/scripts/tables.py --evaluations {input.evaluations} --replay {input.replay} "
        "--prompts {input.prompts} "
        "--paper '{input.paper}' --order {params.order} --experts {params.experts} --seed {params.seed} "
        "--out-dir {params.out_dir} > {log} 2>&1"


rule interpolation_distances:
    input:
        target=target_json("{target}"),
        drafters=lambda w: sorted({d for b in interpolation_backbones() for line in line_points(w.target, b).values()
                                   for d in line.values()}),
        features=lambda w: sorted({d for parts in line_val_data(w.target).values() for d, _ in parts}),
    output:
        f"{RESULTS}/tables/interpolation/{{target}}.parquet",
    log:
        f"{RESULTS}/logs/interpolation_distances/{{target}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/interpolation_distances/{{target}}.tsv"
    params:
        lines=json_arg(config.get("interpolations", {})),
        points=lambda w: json_arg({b: line_points(w.target, b) for b in interpolation_backbones()}),
        val_data=lambda w: json_arg(line_val_data(w.target)),
        settings=json_arg({b: train_settings(b) for b in interpolation_backbones()}),
    threads: 1
    resources:
        **job_resources("interpolation_distances", mem_mb=4000, runtime=10, gpu=False),
    conda:
        ENV
    shell:
        "python workflow/scripts/interpolation_distances.py --target {input.target} --label {wildcards.target} "
        "--lines {params.lines} --points {params.points} --val-data {params.val_data} "
        "--settings {params.settings} --threads 1 --device cpu --out {output} > {log} 2>&1"


rule interpolation_table:
    input:
        distances=[f"{RESULTS}/tables/interpolation/{t}.parquet" for t in config["targets"]],
        prompts=f"{RESULTS}/tables/prompts.parquet",
    output:
        [report(f"{RESULTS}/tables/interpolation.{ext}", caption="../report/table_interpolation.rst",
                category="Tables", subcategory="interpolation") for ext in ("csv", "md", "tex")],
    log:
        f"{RESULTS}/logs/interpolation_table.log",
    params:
        lines=json_arg(INTERPOLATIONS),
        out=lambda w, output: output[0].removesuffix(".csv"),
    threads: 1
    resources:
        **job_resources("tables", mem_mb=2000, runtime=10, gpu=False),
    conda:
        ENV
    shell:
        "python workflow/scripts/interpolation_table.py --distances {input.distances} --prompts {input.prompts} "
        "--interpolations {params.lines} --out {params.out} > {log} 2>&1"


rule figures:
    input:
        [f"{RESULTS}/tables/{frame}.parquet" for frame in FRAMES],
    output:
        [report(f"{RESULTS}/figures/{name}.png", caption=f"../report/figure_{name}.rst", category="Figures")
         for name in FIGURE_NAMES],
        [f"{RESULTS}/figures/{name}.pdf" for name in FIGURE_NAMES],
    log:
        f"{RESULTS}/logs/figures.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures.tsv"
    params:
        tables_dir=lambda w, input: os.path.dirname(input[0]),
        out_dir=lambda w, output: os.path.dirname(output[0]),
        interpolations=json_arg(INTERPOLATIONS),
    threads: 1
    resources:
        **job_resources("figures", mem_mb=4000, runtime=10, gpu=False),
    conda:
        ENV
    shell:
        "python workflow/scripts/figures.py --tables-dir {params.tables_dir} --out-dir {params.out_dir} "
        "--interpolations {params.interpolations} > {log} 2>&1"


rule findings:
    input:
        prompts=f"{RESULTS}/tables/prompts.parquet",
        routing=f"{RESULTS}/tables/routing.parquet",
    output:
        md=report(f"{RESULTS}/findings.md", caption="../report/findings.rst", category="Findings"),
        claims=f"{RESULTS}/findings.parquet",
        comparisons=report(f"{RESULTS}/tables/findings_comparisons.csv", caption="../report/findings.rst",
                           category="Findings"),
    log:
        f"{RESULTS}/logs/findings.log",
    benchmark:
        f"{RESULTS}/benchmarks/findings.tsv"
    params:
        roles=json_arg({**config.get("findings", {}), "interpolations": INTERPOLATIONS}),
        seed=config["seed"],
    threads: 1
    resources:
        **job_resources("findings", mem_mb=2000, runtime=10, gpu=False),
    conda:
        ENV
    shell:
        "python workflow/scripts/findings.py --prompts {input.prompts} --routing {input.routing} --roles {params.roles} "
        "--seed {params.seed} --out-md {output.md} --out {output.claims} --out-comparisons {output.comparisons} "
        "> {log} 2>&1"
