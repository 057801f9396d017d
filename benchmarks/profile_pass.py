"""Where a target pass goes: one decode step and one tree verification pass, by part.

    python benchmarks/profile_pass.py [--target gemma-3-270m] [--context 600] [--nodes 1 16] [--repeats 20]

For each pass size it times the pass as the engine runs it (median wall time, no instrumentation),
then again with a timer on every module, and splits the instrumented time by the kind of module
that spent it, each module's own time with its children's taken out:
- linear: the projection layers (`taps.linear`);
- norm, rotary (cos/sin tables), embedding: the modules of those names;
- attention: the attention module's own work: applying RoPE, the KV cache update, scores and
  softmax through SDPA with the tree mask;
- mlp: the activation and the gate product;
- layer and model glue: the rest of each decoder layer's and the model's own Python (residual
  adds, Hugging Face's mask and position handling);
- tree mask: building the additive masks (`TargetModel._masks`);
- head: the 262k-row output layer for every node (`TargetModel.logits`);
- the adapter: the rest of `TargetModel.forward` (positions, ancestor mask, cache bookkeeping).
Timers add their own cost, shown as the difference between the two totals. Run it on an idle
machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

from taps.generate import chain
from taps.target import load_target

KINDS = (("Linear", "linear"), ("RMSNorm", "norm"), ("Rotary", "rotary"), ("Embedding", "embedding"),
         ("Attention", "attention"), ("MLP", "mlp"), ("DecoderLayer", "layer glue"))


def kind_of(module: torch.nn.Module, top: torch.nn.Module) -> str | None:
    if module is top:
        return "model glue"
    name = type(module).__name__
    return next((kind for key, kind in KINDS if key in name), None)


class ModuleTimer:
    """Exclusive wall time per module kind, through forward hooks."""

    def __init__(self, model: torch.nn.Module):
        self.seconds: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []  # [kind, start, time spent in timed children]
        self.handles = []
        for module in model.modules():
            kind = kind_of(module, model)
            if kind:
                self.handles.append(module.register_forward_pre_hook(lambda m, a, kind=kind: self.enter(kind)))
                self.handles.append(module.register_forward_hook(lambda m, a, o: self.leave()))

    def enter(self, kind: str) -> None:
        self.stack.append([kind, time.perf_counter(), 0.0])

    def leave(self) -> None:
        kind, start, children = self.stack.pop()
        spent = time.perf_counter() - start
        self.seconds[kind] += spent - children
        if self.stack:
            self.stack[-1][2] += spent

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def timed(fn, seconds: dict, kind: str):
    def run(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        seconds[kind] += time.perf_counter() - start
        return out
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="gemma-3-270m")
    parser.add_argument("--context", type=int, default=600, help="tokens already in the cache")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    target = load_target(args.target)
    cache = target.new_cache()
    context = torch.randint(10, 1000, (args.context,))
    target.forward(context, chain(args.context), cache)
    print(f"target {args.target} on {target.device} ({target.dtype}), {torch.get_num_threads()} threads, "
          f"context {args.context} tokens; ms per pass, median of {args.repeats} (plain) and mean (by part)")
    for n in args.nodes:
        tokens = torch.randint(10, 1000, (n,))
        parents = torch.tensor([-1] + [(i - 1) // 2 for i in range(1, n)])  # a binary tree; n=1: a decode step

        def run():
            target.logits(target.forward(tokens, parents, cache))
            target.compact(cache, args.context, torch.zeros(0, dtype=torch.long))

        run()
        plain = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            plain.append(time.perf_counter() - start)
        timer = ModuleTimer(target.body)
        parts = timer.seconds
        forward, logits, masks = target.forward, target.logits, target._masks
        target.forward, target.logits = timed(forward, parts, "_forward"), timed(logits, parts, "head")
        target._masks = timed(masks, parts, "tree mask")
        start = time.perf_counter()
        for _ in range(args.repeats):
            run()
        total = time.perf_counter() - start
        del target.forward, target.logits, target._masks  # back to the class's methods
        timer.remove()
        body = sum(v for k, v in parts.items() if k not in ("_forward", "head"))
        parts["adapter"] = parts.pop("_forward") - body
        parts["compact"] = total - sum(parts.values())
        print(f"\n{n} node{'s' * (n > 1)}: {1000 * statistics.median(plain):.1f} ms plain, "
              f"{1000 * total / args.repeats:.1f} ms with timers")
        for kind, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
            print(f"  {kind:12s} {1000 * seconds / args.repeats:7.2f} ms  {100 * seconds / total:5.1f}%")


if __name__ == "__main__":
    main()
