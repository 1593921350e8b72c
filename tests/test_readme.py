"""The README's two commands are the ones CI runs: a newcomer's install is CI's install."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    """The commands of the README's Quick start block, comments stripped."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Quick start\s+```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no Quick start bash block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def ci_commands() -> list[str]:
    return [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_ci_runs_the_readme_install_and_test_commands():
    install, _repro, tests = quick_start_commands()
    assert "pip install" in install and "-e" in install
    assert tests.startswith("python -m pytest")
    ci = ci_commands()
    assert install in ci, f".ci/run does not run the README's install command: {install}"
    assert tests in ci, f".ci/run does not run the README's test command: {tests}"
    assert ci.index(install) < ci.index(tests)


def test_install_upgrades_pip_before_resolving():
    """Python 3.11's bundled pip 23.2 takes many minutes to resolve the dependency set; a current pip does not."""
    install = quick_start_commands()[0]
    assert install.index("install -U pip") < install.index('install -e ".[dev]"')
