"""The paper's tables from the aggregated frames: Markdown, LaTeX and CSV (taps.tables)."""

import argparse
import json
import os

import pandas as pd

from taps.intermediates import read_parquet
from taps.tables import (ORACLE, composition_table, headline_table, main_numbers, main_table, replay_table,
                         routing_table, speed_table, temperature_table, with_oracle, write_table)

CAPTIONS = {
    "headline": "The paper's headline table: mean tau over MT-Bench, GSM8K, MATH-500 and SVAMP per composition, "
                "temperature and backbone [95% bootstrap CI over prompts, resampled within each benchmark] (n: the "
                "fewest prompts of a benchmark); paper columns: the TAPS paper's reported average (Llama-3-8B-Instruct "
                "target).",
    "main": "Acceptance length tau [95% bootstrap CI over prompts] per variant and benchmark; paper rows: the "
            "TAPS paper's reported tau (Llama-3-8B-Instruct target, data/paper/taps_reported.csv); 'oracle: matched "
            "expert' is derived, not run: on each benchmark the expert of its domain (findings.experts).",
    "compositions": "Compositions of the math and chat drafters against the best single drafter: tau [95% CI] "
                    "and target nodes verified per pass (merged trees at the paper's budget and at equal budget).",
    "routing": "Routing shares: the fraction of decoding cycles whose kept tree (routing) or last accepted node "
               "(merged tree) came from each drafter.",
    "speed": "Speed on the timed prompts (evaluate.timed; vanilla run once per turn right before the engines, same "
             "process): prefill ms per turn, decode tokens/s (prefill excluded) of the engine and of our own vanilla "
             "loop, the speedup (mean over benchmarks of the decode tokens/s ratio) [95% bootstrap CI over prompts], "
             "and whether greedy outputs were identical to the target's (turns where they were not: "
             "evaluate.on_mismatch record).",
    "temperature": "The temperature effect on the same prompts (T=1's prompts are the first of T=0's sample; MT-Bench's "
                   "second turn follows the target's greedy first answer at both): tau [95% bootstrap CI] at each "
                   "temperature and the paired difference [95% CI], prompts resampled together.",
    "replay": "Replay's measured error: timed T=0 turns decoded by both the engine and replay (and their distinct "
              "prompts), turns whose records "
              "differed, and the engine - replay difference in tau [95% bootstrap CI over prompts]; reference "
              "mismatches: replayed turns whose reference (the vanilla output) is not the target's one-pass argmax "
              "somewhere, of all replayed turns, each target x benchmark's references counted once.",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--evaluations", required=True)
    parser.add_argument("--replay", required=True)
    parser.add_argument("--prompts", required=True, help="per-prompt frame (timing of the timed prompts)")
    parser.add_argument("--paper", default="", help="the paper's reported numbers (CSV); '' for none")
    parser.add_argument("--order", type=json.loads, default=None, help="compositions in table order")
    parser.add_argument("--experts", type=json.loads, default={"math": "math", "chat": "chat"},
                        help="domain -> expert composition, for the main table's oracle row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    E = read_parquet(args.evaluations, "table")
    paper = pd.read_csv(args.paper) if args.paper else None
    stem = lambda name: os.path.join(args.out_dir, name)  # noqa: E731
    main = with_oracle(E, args.experts)
    order = None if args.order is None else [*args.order, ORACLE]
    write_table(main_table(main, paper, order), stem("main"), CAPTIONS["main"], numbers=main_numbers(main, paper, order))
    write_table(composition_table(E), stem("compositions"), CAPTIONS["compositions"])
    write_table(routing_table(E), stem("routing"), CAPTIONS["routing"])
    P = read_parquet(args.prompts, "table")
    write_table(headline_table(P, paper, args.order, args.seed), stem("headline"), CAPTIONS["headline"])
    write_table(speed_table(P, E, args.seed), stem("speed"), CAPTIONS["speed"])
    write_table(temperature_table(P, args.seed), stem("temperature"), CAPTIONS["temperature"])
    write_table(replay_table(read_parquet(args.replay, "table"), E, args.seed), stem("replay"), CAPTIONS["replay"])
    print(open(stem("main") + ".md").read())


if __name__ == "__main__":
    main()
