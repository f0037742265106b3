"""The project's own files agree with each other: pyproject.toml is the single source of
package metadata; environment.yml, the set-up script and CI follow it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_torch_is_not_pinned_in_the_package_metadata():
    deps = PYPROJECT["project"]["dependencies"]
    torch = [d for d in deps if re.match(r"torch\b", d)]
    assert torch and "==" not in torch[0]


def test_environment_yml_follows_pyproject():
    env = (ROOT / "environment.yml").read_text()
    setup = PYPROJECT["tool"]["pitchtimbre"]["setup"]
    extras = ",".join(sorted(PYPROJECT["project"]["optional-dependencies"]))
    assert f"-e .[{extras}]" in env
    assert setup["torch"] in env
    for spec in setup["no-deps"]:
        assert spec in env
    python = re.search(r"python=(\d+\.\d+)", env).group(1)
    floor = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("."))) >= tuple(map(int, floor.split(".")))


def test_ci_runs_the_readme_test_command():
    ci = [
        line
        for line in (ROOT / ".ci/run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == ["bash scripts/test.sh"]
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/reproduce.sh" in readme


def test_setup_reads_its_settings_from_pyproject():
    script = (ROOT / "scripts/setup.sh").read_text()
    for key in ("torch", "no-deps"):
        assert f"setting {key}" in script


def test_readme_profile_table_matches_the_config():
    from pitchtimbre.config import PROFILES, profile_config

    readme = (ROOT / "README.md").read_text()
    for name in PROFILES:
        cfg = profile_config(name)
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"hidden {cfg.model.hidden}" in row
        assert f"{cfg.train.steps:,} steps" in row
        seeds = len(cfg.seeds)
        assert f"{seeds} seed{'s' if seeds > 1 else ''}" in row
