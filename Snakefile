"""TAPS: from raw datasets to specialised drafters, their compositions' evaluation, and the tables.

    snakemake --cores all                                  # the CPU reproduction (config/config.yaml)
    snakemake --cores all --configfile config/smoke.yaml   # tiny end-to-end run (CI)
    snakemake --profile profiles/slurm                     # paper scale on a SLURM cluster
    snakemake released --configfile config/paper.yaml     # the paper's released drafters, nothing trained
    snakemake --report results/report.html                 # tables, figures and findings in one page
"""

from snakemake.utils import min_version, validate

min_version("9.0")


# the default config applies only when none is named: a --configfile replaces it, never merges into it
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"



validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/targets.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        drafter_outputs(),
        export_outputs(),
        report_outputs(),


# `snakemake released`: every evaluation of released drafters alone, with the imports and references it
# needs and nothing trained (docs/released-drafters.md)
rule released:
    input:
        evaluation_outputs(released_only=True),
