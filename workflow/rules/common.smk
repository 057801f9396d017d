# Shared helpers: output paths, the resolved config per target, the command prefix.

import json
from pathlib import Path

RESULTS = config["results"]
SRC = str(Path(workflow.basedir) / "src")
# every script runs against this checkout's library, in the base env or a --use-conda env alike
PY = f"PYTHONPATH={SRC}${{PYTHONPATH:+:$PYTHONPATH}} python"
ENV = "../../envs/taps.yaml"


def target_cfg(target):
    return config["targets"][target]


def target_json(target):
    return f"{RESULTS}/targets/{target}/target.json"


def drafter_dir(target, backbone, dataset):
    return f"{RESULTS}/drafters/{target}/{backbone}/{dataset}/drafter"


def json_arg(value):
    """A config value as one shell-quoted JSON argument."""
    return "'" + json.dumps(value).replace("'", "'\\''") + "'"


def drafter_outputs():
    out = []
    for target in config["targets"]:
        for backbone in config["backbones"]:
            out += [drafter_dir(target, backbone, d) for d in config["datasets"]]
            out += [drafter_dir(target, backbone, f"avg-{a}") for a in config.get("averages", {})]
    return out


def device_args():
    return f"--device {config.get('device', 'auto')} --threads {config.get('threads', 2)}"
