"""benchmarks/sde_step.py: the rows it prints and its instruction-set cap (a proxy for AVX2 machines)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sde_step.py"


def _rows(*extra: str) -> list[dict]:
    cmd = [sys.executable, str(SCRIPT), "--only", "128x64", "--steps", "1", "--threads", "1", "--no-memory",
           "--variants", "ours+pose_half+fused_adam", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("flag", [("--isa", "avx2"), ("--isa=avx2",)])
def test_isa_cap_reaches_torch_and_rows_compare_against_naive(flag: tuple[str, ...]) -> None:
    rows = _rows(*flag)
    assert [r["variant"] for r in rows] == ["naive", "ours+pose_half+fused_adam"]
    assert {r["cpu_capability"] for r in rows} == {"AVX2"}  # the cap is set before torch loads
    naive = rows[0]["s_per_step_median"]
    for r in rows:
        assert r["s_per_step_median"] > 0 and r["images_per_s"] > 0
        assert r["speedup_vs_naive"] == round(naive / r["s_per_step_median"], 3)
