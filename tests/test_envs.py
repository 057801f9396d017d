"""The conda environment the rules name agrees with pyproject.toml: every dependency pinned, every pin allowed."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pins(env: dict) -> dict[str, str]:
    """name -> pinned version of an env file's pip section (and its conda packages with a version)."""
    pins = {}
    for dep in env["dependencies"]:
        entries = dep["pip"] if isinstance(dep, dict) else [dep.replace("=", "==", 1)]
        for entry in entries:
            name, _, version = entry.partition("==")
            pins[name.lower()] = version
    return pins


def test_every_rule_names_an_env_file_that_exists():
    for rules in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = rules.read_text()
        assert text.count("conda:") == len(re.findall(r"^\s*(?:rule \w+|rule):", text, re.M)), rules.name
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    env = re.search(r'ENV = "\.\./\.\./(.+)"', common).group(1)
    assert sorted(p.name for p in (ROOT / "envs").iterdir()) == [Path(env).name]


def test_the_env_file_pins_every_dependency_at_a_version_pyproject_allows():
    env = yaml.safe_load((ROOT / "envs" / "taps.yaml").read_text())
    pins = _pins(env)
    assert all(re.fullmatch(r"[0-9][0-9.]*", v) for v in pins.values()), pins  # exact versions only
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        req = Requirement(line)
        assert req.name.lower() in pins, f"{req.name} is a dependency but envs/taps.yaml does not pin it"
        assert req.specifier.contains(pins[req.name.lower()]), (req, pins[req.name.lower()])
    python = Requirement(f"python{project['requires-python']}")
    assert python.specifier.contains(pins["python"] + ".0"), pins["python"]
