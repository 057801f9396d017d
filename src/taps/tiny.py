"""A tiny random target for smoke runs: a byte-level BPE tokenizer and a 2-layer Llama.

The smoke workflow needs a target that is a real Hugging Face directory (config, weights,
tokenizer) so every rule runs exactly as it would on a real model, yet trains and decodes in
seconds. The tokenizer is trained on the given text files, so the smoke data tokenizes into
a small vocabulary; the model is random (seeded), saved with safetensors.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast


@dataclass(frozen=True)
class TinyTargetConfig:
    """Size of the smoke target."""

    vocab_size: int = 512  # BPE vocabulary, special tokens included
    hidden_size: int = 64  # model width
    num_hidden_layers: int = 2  # decoder layers
    seed: int = 0  # seeds the random weights


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with <bos>, <eos> and <pad>; no chat template (the plain template applies)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def build_tiny_target(texts: list[str], out_dir: str, config: TinyTargetConfig = TinyTargetConfig()) -> None:
    """Write a tokenizer + random Llama directory to out_dir, atomically."""
    if not texts:
        raise ValueError("build_tiny_target needs some text to train its tokenizer on")
    tokenizer = train_tokenizer(texts, config.vocab_size)
    model_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=2 * config.hidden_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=4096, initializer_range=0.1, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(model_config)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tiny-target-", dir=parent)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
