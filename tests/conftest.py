"""Tiny random targets and drafters for fast, offline tests.

`tiny_target` is a 2-layer Llama whose attention and MLP outputs are scaled down, so it is
close to a bigram model; `echo_drafter` predicts the current token's embedding as the next
feature, which through the head is that same bigram. The pair agrees often but not always,
so speculative tests exercise long accepted paths, rejections and cut-offs alike.
"""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from taps import Drafter, DrafterConfig, TargetModel


def tiny_target(vocab: int = 64, seed: int = 0, residual: float = 0.1, head_scale: float = 1.0,
                hidden: int = 64, dtype: torch.dtype = torch.float32) -> TargetModel:
    cfg = LlamaConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=2 * hidden, vocab_size=vocab, max_position_embeddings=1024,
                      initializer_range=0.1, tie_word_embeddings=False,
                      bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(residual)
            layer.mlp.down_proj.weight.mul_(residual)
        model.lm_head.weight.mul_(head_scale)
    return TargetModel(model.to(dtype), name=f"tiny-llama-{seed}")


def tiny_gemma3() -> TargetModel:
    """A 2-layer Gemma-3 whose first layer attends within a sliding window of 4 tokens."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=1, head_dim=16, vocab_size=64, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention"], max_position_embeddings=256,
                           initializer_range=0.2, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    return TargetModel(Gemma3ForCausalLM(cfg), name="tiny-gemma3")


def echo_drafter(target: TargetModel, config: DrafterConfig = DrafterConfig(), d2t=None) -> Drafter:
    drafter = Drafter(target, config, d2t=d2t)
    hidden = target.hidden_size
    with torch.no_grad():
        drafter.fc.weight.zero_()
        drafter.fc.weight[:, :hidden] = torch.eye(hidden)
        for layer in drafter.layer.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return drafter


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core CPU it costs a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def target() -> TargetModel:
    return tiny_target()


@pytest.fixture(scope="session")
def drafter(target) -> Drafter:
    return echo_drafter(target)


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory):
    """The smoke DAG run once locally (`snakemake --cores 2`), shared by the tests that read it: the
    workflow test checks its outputs, the SLURM test compares a cluster run with them. Returns the results
    folder and Snakemake's output. Tests that add to it (the report, imported drafters) name what they add."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    results = tmp_path_factory.mktemp("smoke") / "results"
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/smoke.yaml",
                          "--config", f"results={results}", f"data_dir={root / 'data'}"],
                         cwd=root, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return results, run.stdout + run.stderr
