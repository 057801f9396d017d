"""The paper's figures from the aggregated frames: PNG and PDF (taps.figures)."""

import argparse
import os

from taps.aggregate import temperature_pairs
import json

from taps.figures import (confidence_entropy_figure, depth_figure, interpolation_figure, interpolation_points,
                          routing_oracle_figure, save_figure, tau_figure, temperature_figure)
from taps.intermediates import read_parquet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tables-dir", required=True, help="the aggregated frames (rule aggregate)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--interpolations", type=json.loads, default={},
                        help="interpolation lines, pair -> {alpha: composition} (config interpolations)")
    args = parser.parse_args()
    frame = lambda name: read_parquet(os.path.join(args.tables_dir, f"{name}.parquet"), "table")  # noqa: E731
    E, D = frame("evaluations"), frame("depth")
    figures = {"tau_T0": tau_figure(E, 0.0), "confidence_entropy": confidence_entropy_figure(frame("nodes")),
               "routing_oracle": routing_oracle_figure(frame("routing")), "depth": depth_figure(D, 0.0),
               "temperature": temperature_figure(temperature_pairs(frame("prompts"))),
               "interpolation": interpolation_figure(interpolation_points(frame("prompts"), args.interpolations))}
    for name, fig in figures.items():
        save_figure(fig, os.path.join(args.out_dir, name))


if __name__ == "__main__":
    main()
