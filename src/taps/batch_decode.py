"""Batched autoregressive decoding over a shared prompt prefix: how the target writes training answers.

Training prompts of one source share their few-shot exemplars (~400-600 tokens for the base
target) and differ in a short question. Hugging Face `generate` recomputes that prefix in every
row, pads rows on the left, and keeps decoding rows that have already stopped. `decode_batch`
instead:

- runs the batch's longest common token prefix once (one row) and repeats its KV cache;
- runs each row's own suffix in one batched pass, laid out [prefix | padding | suffix] so that
  every row's next token lands at the same cache index;
- gives the model explicit per-row positions and 4-D additive masks (one per attention type, so
  sliding windows count real positions, as `TargetModel.forward` does);
- drops a row from the batch, cache included, as soon as it stops (EOS, stop string, length);
- keeps each layer's keys and values in buffers of the batch's final length once the prompts are
  in: a step writes in place and attention reads the whole buffer, its unwritten slots masked,
  where Hugging Face's `DynamicCache` copies the whole cache at every step.

The tokens are those the vanilla loop (`taps.generate.vanilla_generate`) emits for each prompt
alone, up to float rounding of batched products (tested token for token, Gemma included).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers.cache_utils import DynamicLayer

from taps.generate import StopStrings, chain, cut_new_tokens
from taps.target import TargetModel
from taps.tree import additive_mask
from taps.verify import target_probs


def common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix all rows share, leaving each row at least one token of its own."""
    n = min(len(r) for r in rows) - 1
    first = rows[0]
    for k in range(max(n, 0)):
        if any(r[k] != first[k] for r in rows[1:]):
            return k
    return max(n, 0)


def _masks(target: TargetModel, allowed: Tensor, query_pos: Tensor, key_pos: Tensor):
    """[B, Q, K] allowed keys -> the additive mask(s) the model takes: one, or one per attention type."""
    full = additive_mask(allowed, target.dtype)[0, 0][:, None].to(target.device)  # [B, 1, Q, K]
    if "sliding_attention" not in target.layer_types:
        return full
    in_window = (query_pos[:, :, None] - key_pos[:, None, :]) < target.config.sliding_window
    sliding = additive_mask(allowed & in_window, target.dtype)[0, 0][:, None].to(target.device)
    return {"full_attention": full, "sliding_attention": sliding}


class _FullLayer(DynamicLayer):
    """A cache layer whose keys and values live in buffers of a fixed length: `update` writes the new entries
    in place and returns the whole buffers (the caller masks the slots not yet written)."""

    def __init__(self, keys: Tensor, values: Tensor, capacity: int):
        super().__init__()
        self.length = keys.shape[-2]
        self.keys, self.values = (torch.cat([t, t.new_zeros(*t.shape[:-2], capacity - self.length, t.shape[-1])], -2)
                                  for t in (keys, values))
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        q = key_states.shape[-2]
        self.keys[..., self.length:self.length + q, :] = key_states
        self.values[..., self.length:self.length + q, :] = value_states
        self.length += q
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


class _Batch:
    """The live rows' cache, key positions and key validity; rows leave when they stop."""

    def __init__(self, target: TargetModel, prompts: Sequence[Sequence[int]], room: int):
        self.target, self.capacity = target, 0
        p = common_prefix(prompts)
        self.cache = target.new_cache()
        if p:
            target.forward(torch.tensor(list(prompts[0][:p])), chain(p), self.cache)
            self.cache.batch_repeat_interleave(len(prompts))
        suffixes = [list(r[p:]) for r in prompts]
        width = max(len(s) for s in suffixes)
        pads = torch.tensor([width - len(s) for s in suffixes])  # [B]
        index = torch.arange(p + width)  # key index of the prefix and suffix region
        self.valid = (index[None] < p) | (index[None] >= p + pads[:, None])  # [B, K]
        self.key_pos = torch.where(index[None] < p, index[None], index[None] - pads[:, None])  # [B, K]
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        for i, s in enumerate(suffixes):
            ids[i, width - len(s):] = torch.tensor(s)
        self.last = self._run(ids, self.key_pos[:, p:])
        # the prompts are in: from here on, buffers with room for `room` more tokens per row
        self.capacity = p + width + room
        self.cache.layers = [_FullLayer(layer.keys, layer.values, self.capacity) for layer in self.cache.layers]

    def _run(self, ids: Tensor, pos: Tensor) -> Tensor:
        """Append ids [B, Q] at positions pos to every row; the last column's features [B, H]."""
        q, k = ids.shape[1], self.valid.shape[1]  # the bookkeeping already covers the new keys
        causal = torch.ones(q, k, dtype=torch.bool).tril(k - q)  # [Q, K]
        allowed = causal[None] & self.valid[:, None, :]  # [B, Q, K]
        allowed[:, torch.arange(q), k - q + torch.arange(q)] = True  # a padding query sees itself
        key_pos = self.key_pos
        if self.capacity > k:  # full buffers: the slots not yet written are masked
            allowed, key_pos = F.pad(allowed, (0, self.capacity - k)), F.pad(key_pos, (0, self.capacity - k))
        out = self.target.body(input_ids=ids.to(self.target.device),
                               attention_mask=_masks(self.target, allowed, pos, key_pos),
                               position_ids=pos.to(self.target.device), past_key_values=self.cache, use_cache=True)
        return out.last_hidden_state[:, -1]

    def step(self, tokens: Tensor) -> Tensor:
        """Feed one token per live row; their features [B, H]."""
        pos = self.key_pos[:, -1:] + 1
        self.key_pos = torch.cat([self.key_pos, pos], dim=1)
        self.valid = torch.cat([self.valid, torch.ones(len(tokens), 1, dtype=torch.bool)], dim=1)
        return self._run(tokens[:, None], pos)

    def keep(self, rows: Tensor) -> None:
        """Keep only `rows` (indices into the live rows), cache included."""
        idx = rows.to(self.target.device)
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[idx], layer.values[idx]
        self.valid, self.key_pos = self.valid[rows], self.key_pos[rows]


@torch.no_grad()
def decode_batch(target: TargetModel, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 temperature: float = 0.0, stop: StopStrings | None = None,
                 generator: torch.Generator | None = None) -> list[tuple[list[int], str]]:
    """(new tokens, finish) per prompt: greedy at T=0, else plain temperature sampling.

    The tokens are cut after the first EOS or stop string, at most max_new_tokens; finish says
    which ended them (eos | stop | length), as the vanilla loop's.
    """
    eos = target.eos_token_ids
    out: list[list[int]] = [[] for _ in prompts]
    finish = [""] * len(prompts)
    live = list(range(len(prompts)))
    batch = _Batch(target, prompts, room=max_new_tokens)
    features = batch.last
    while True:
        logits = target.logits(features)  # [B, V]
        if temperature > 0:
            tokens = torch.multinomial(target_probs(logits, temperature), 1, generator=generator)[:, 0]
        else:
            tokens = logits.argmax(-1)
        tokens = tokens.cpu()
        still = []
        for j, (i, t) in enumerate(zip(live, tokens.tolist())):
            new, finish[i] = cut_new_tokens(out[i], [t], max_new_tokens, eos, stop)
            out[i] += new
            if not finish[i]:
                still.append(j)
        if not still:
            return list(zip(out, finish))
        if len(still) < len(live):
            batch.keep(torch.tensor(still))
            live, tokens = [live[j] for j in still], tokens[still]
        features = batch.step(tokens)
