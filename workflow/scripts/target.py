"""Resolve a configured target (building the tiny random one for smoke runs) and write target.json."""

import argparse
import json

from taps.target import load_target, write_target_spec
from taps.tiny import TinyTargetConfig, build_tiny_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="the target's alias in config")
    parser.add_argument("--config", required=True, type=json.loads, help="the target's config entry, as JSON")
    parser.add_argument("--data-dir", required=True, help="where the tiny target's tokenizer texts are read from")
    parser.add_argument("--model-dir", required=True, help="where a tiny-random target is built")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    model = args.config["model"]
    if model == "tiny-random":
        tiny = dict(args.config.get("tiny", {}))
        lines = tiny.pop("tokenizer_texts", 500)
        with open(f"{args.data_dir}/gsm8k_train.jsonl") as f:
            texts = [" ".join(json.loads(line).values()) for _, line in zip(range(lines), f)]
        build_tiny_target(texts, args.model_dir, TinyTargetConfig(**tiny))
        model = args.model_dir
    trust = args.config.get("trust_remote_code", False)
    target = load_target(model, device="cpu", trust_remote_code=trust)
    target.name = args.name
    write_target_spec(target, model, trust, args.out)
    print(json.dumps(target.fingerprint().__dict__, indent=2))


if __name__ == "__main__":
    main()
