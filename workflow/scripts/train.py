"""Train one drafter (EAGLE-2 or HASS) on a mixture of feature directories, or of training Parquets with
online features; resumable from --workdir. Under torchrun (WORLD_SIZE > 1) each process takes one GPU
(LOCAL_RANK) and a share of every batch (taps.parallel)."""

import argparse
import dataclasses
import datetime
import json
import os

import torch
import torch.distributed as dist

from common import add_settings_arg, add_target_args, open_target, train_config
from taps.online import OnlineFeatures
from taps.shards import FeatureMixture
from taps.train import train_drafter
from taps.vocab import load_vocab


def start_processes(args: argparse.Namespace) -> None:
    """Join the torchrun process group (nccl on GPUs, gloo on the CPU), one GPU per process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    cuda = args.device != "cpu" and torch.cuda.is_available()
    if cuda:
        args.device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(args.device)
    # rank 0 validates alone at each epoch's end while the others wait in the next reduction
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_args(parser)
    sources = parser.add_mutually_exclusive_group(required=True)
    sources.add_argument("--features", nargs="+", help="feature directories (one per source)")
    sources.add_argument("--data", nargs="+", help="training Parquets (one per source): features computed online")
    parser.add_argument("--vocab", help="draft vocabulary (rule draft_vocab); with --data")
    parser.add_argument("--counts", nargs="*", type=int, default=[],
                        help="conversations taken from each source, in order (default: all of one source)")
    add_settings_arg(parser, "TrainConfig fields, as JSON")
    parser.add_argument("--warm-start", default="", help="drafter directory to start from ('' for none)")
    parser.add_argument("--workdir", required=True,
                        help="holds state/, best/, metrics.parquet, val_metrics.parquet and the final drafter/")
    args = parser.parse_args()
    paths = args.features or args.data
    if args.counts and len(args.counts) != len(paths):
        raise SystemExit(f"--counts gives {len(args.counts)} numbers for {len(paths)} sources")
    if not args.counts and len(paths) > 1:
        raise SystemExit("several sources need --counts")
    if args.data and not args.vocab:
        raise SystemExit("--data (online features) needs --vocab, the draft vocabulary")
    config = train_config(args.settings, args.warm_start.strip())
    start_processes(args)
    target = open_target(args)
    counts = args.counts or [None]
    if args.data:
        features = OnlineFeatures(target, list(zip(args.data, counts)), load_vocab(args.vocab))
    else:
        features = (FeatureMixture(list(zip(args.features, args.counts)), target.fingerprint()) if args.counts
                    else args.features[0])
    # Snakemake runs this job again when its output is missing (a killed job: the saved state resumes) or its
    # settings changed (a state of other settings is an older run: restart)
    train_drafter(target, features, args.workdir, config, restart=True)
    print(json.dumps(dataclasses.asdict(config), indent=2))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
