"""Directory fingerprints: what downstream DVC stages depend on instead of whole directories."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from semdepth.io import FINGERPRINT, write_fingerprint

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path) -> None:
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"\x89PNG one")
    (root / "y.parquet").write_bytes(b"table")


def test_fingerprint_follows_content_names_and_ignores_itself(tmp_path):
    _tree(tmp_path / "d")
    first = write_fingerprint(tmp_path / "d")
    assert first["files"] == 2 and first["bytes"] == len(b"\x89PNG one") + len(b"table")
    assert json.loads((tmp_path / "d" / FINGERPRINT).read_text()) == first
    assert write_fingerprint(tmp_path / "d") == first  # its own file is not part of it
    _tree(tmp_path / "e")
    assert write_fingerprint(tmp_path / "e")["md5"] == first["md5"]  # location does not matter

    (tmp_path / "d" / "a" / "x.png").write_bytes(b"\x89PNG two")  # same size, other content
    changed = write_fingerprint(tmp_path / "d")
    assert changed["md5"] != first["md5"] and changed["bytes"] == first["bytes"]
    (tmp_path / "e" / "a" / "x.png").rename(tmp_path / "e" / "a" / "z.png")  # same bytes, other name
    assert write_fingerprint(tmp_path / "e")["md5"] != first["md5"]


def test_consumers_depend_on_the_fingerprint_of_produced_directories():
    """A stage reading a directory another stage produces must depend on its fingerprint (or the
    directory): a dependency on some other file inside it would miss changes to the rest."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    produced = {next(iter(o)) if isinstance(o, dict) else o for s in stages.values() for o in s.get("outs", [])}
    dirs = {p for p in produced if not Path(p).suffix}
    checked = 0
    for name, spec in stages.items():
        for dep in spec.get("deps", []):
            inside = [d for d in dirs if dep.startswith(d + "/")]
            for d in inside:
                if d in ("data/prepared", "data/pseudolabels"):
                    assert dep == f"{d}/{FINGERPRINT}", f"{name}: depends on {dep}, not {d}/{FINGERPRINT}"
                    checked += 1
    assert checked >= 10
