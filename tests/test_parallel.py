"""Paper-scale training paths on the CPU: online features equal offline ones step for step, and two
data-parallel processes (gloo) train what one process does on the same global batches."""

import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from taps.features import extract_features
from taps.online import OnlineFeatures
from taps.shards import FeatureShards
from taps.parallel import Prefetcher
from taps.train import train_drafter
from taps.train_config import TrainConfig
from conftest import tiny_target

CONTEXT = [7, 8, 9, 10, 11, 12]  # a few-shot context shared by the even rows
CONFIG = dict(lr=1e-2, epochs=3, batch_tokens=60, warmup_steps=2, noise=0.001, grad_clip=1.0, save_every=5,
              val_fraction=0.2)


def write_data(path, n=10, seed=0):
    """Random rows of 12..24 tokens, the even ones after CONTEXT (context column), loss on the second half."""
    g = torch.Generator().manual_seed(seed)
    ids, masks, contexts = [], [], []
    for i in range(n):
        body = torch.randint(64, (int(torch.randint(12, 25, (1,), generator=g)),), generator=g).tolist()
        context = CONTEXT if i % 2 == 0 else []
        ids.append(context + body)
        masks.append([0] * (len(context) + len(body) // 2) + [1] * (len(body) - len(body) // 2))
        contexts.append(len(context))
    pq.write_table(pa.table({"input_ids": ids, "loss_mask": masks, "source": ["random"] * n,
                             "order": list(range(n)), "context": contexts}), path)
    return str(path)


def test_online_features_train_the_same_losses_as_offline_ones_step_for_step(target, tmp_path):
    data = write_data(tmp_path / "data.parquet")
    d2t = torch.arange(40)
    offline = extract_features(target, data, tmp_path / "features", shard_tokens=64, dtype=torch.float32, d2t=d2t,
                               progress=False)
    online = OnlineFeatures(target, [(data, None)], d2t)
    assert online.lengths == FeatureShards(tmp_path / "features").lengths and online.n_tokens == offline["n_tokens"]
    for backbone in ("eagle2", "hass"):
        config = TrainConfig(backbone=backbone, **CONFIG)
        a = train_drafter(target, str(tmp_path / "features"), str(tmp_path / f"offline-{backbone}"), config,
                          progress=False)
        b = train_drafter(target, online, str(tmp_path / f"online-{backbone}"), config, progress=False)
        assert len(a) == len(b) > 5
        for column in ("loss", "feature_loss", "ce_loss", "topk_loss"):
            torch.testing.assert_close(torch.tensor(b[column].values), torch.tensor(a[column].values),
                                       rtol=1e-4, atol=1e-6)
        assert (a.counted == b.counted).all() and (a.tokens == b.tokens).all()
        val = [pd.read_parquet(tmp_path / f"{kind}-{backbone}" / "val_metrics.parquet") for kind in ("offline", "online")]
        torch.testing.assert_close(torch.tensor(val[1].loss.values), torch.tensor(val[0].loss.values), rtol=1e-4, atol=1e-6)


def test_online_features_take_a_mixtures_rows_by_order_and_refuse_too_few(target, tmp_path):
    data = write_data(tmp_path / "data.parquet")
    part = OnlineFeatures(target, [(data, 4)], torch.arange(40))
    assert [r.order for r in part.rows] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="fewer than the 11 asked for"):
        OnlineFeatures(target, [(data, 11)], torch.arange(40))


def test_the_prefetcher_returns_every_step_in_order(tmp_path):
    with Prefetcher(lambda step: step * step, range(3, 9)) as loader:
        assert [loader.get(step) for step in range(3, 9)] == [9, 16, 25, 36, 49, 64]


def _train_rank(rank, world, init, features, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        train_drafter(tiny_target(), features, out, TrainConfig(backbone="hass", **CONFIG), progress=False)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_train_what_one_process_trains_on_the_same_global_batches(target, tmp_path):
    data = write_data(tmp_path / "data.parquet", n=16)
    features = str(tmp_path / "features")
    extract_features(target, data, features, shard_tokens=64, dtype=torch.float32, d2t=torch.arange(40),
                     progress=False)
    one = train_drafter(target, features, str(tmp_path / "one"), TrainConfig(backbone="hass", **CONFIG),
                        progress=False)
    mp.spawn(_train_rank, args=(2, f"file://{tmp_path}/rendezvous", features, str(tmp_path / "two")), nprocs=2)
    two = pd.read_parquet(tmp_path / "two" / "metrics.parquet")
    assert len(two) == len(one) and (two.sequences == one.sequences).all()
    assert (two.counted == one.counted).all() and (two.tokens == one.tokens).all()
    assert (two.padded_tokens < one.padded_tokens).any()  # each process padded its own share: the batches were split
    torch.testing.assert_close(torch.tensor(two.loss.values), torch.tensor(one.loss.values), rtol=1e-4, atol=1e-6)
    a = load_file(tmp_path / "one" / "drafter" / "drafter.safetensors")
    b = load_file(tmp_path / "two" / "drafter" / "drafter.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@cuda
def test_on_cuda_a_bf16_target_trains_online_with_fp32_master_weights_under_autocast(tmp_path):
    target = tiny_target(dtype=torch.bfloat16)
    target.model.to("cuda")
    data = write_data(tmp_path / "data.parquet")
    online = OnlineFeatures(target, [(data, None)], torch.arange(40))
    config = TrainConfig(backbone="hass", **{**CONFIG, "checkpoint_dtype": "bfloat16"})
    metrics = train_drafter(target, online, str(tmp_path / "run"), config, progress=False)
    assert metrics.loss.notna().all() and metrics.loss.iloc[-3:].mean() < metrics.loss.iloc[:3].mean()
    state = load_file(next((tmp_path / "run" / "state").glob("step-*")) / "drafter.safetensors")
    assert state["fc.weight"].dtype == torch.float32
    assert load_file(tmp_path / "run" / "drafter" / "drafter.safetensors")["fc.weight"].dtype == torch.bfloat16
