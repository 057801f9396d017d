"""A verdict on each of the paper's claims and ours from the aggregated frames (taps.findings)."""

import argparse
import json
import os

from taps.claims import Roles
from taps.findings import findings, findings_markdown
from taps.intermediates import read_parquet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--routing", required=True, help="routed cycles scored by replay (taps.aggregate.routing_rows)")
    parser.add_argument("--roles", type=json.loads, default={}, help="taps.claims.Roles fields (config findings)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-md", required=True)
    parser.add_argument("--out", required=True, help="claims Parquet")
    parser.add_argument("--out-comparisons", required=True, help="comparisons CSV")
    args = parser.parse_args()
    roles = Roles(**args.roles)
    prompts, routing = read_parquet(args.prompts, "table"), read_parquet(args.routing, "table")
    claims, comparisons = findings(prompts, routing, roles, seed=args.seed)
    claims.to_parquet(f"{args.out}.tmp")
    comparisons.to_csv(f"{args.out_comparisons}.tmp", index=False)
    with open(f"{args.out_md}.tmp", "w") as f:
        f.write(findings_markdown(claims, comparisons, roles))
    for path in (args.out, args.out_comparisons, args.out_md):
        os.replace(f"{path}.tmp", path)
    print(claims[["backbone", "temperature", "claim", "verdict", "summary"]].to_string(index=False))


if __name__ == "__main__":
    main()
