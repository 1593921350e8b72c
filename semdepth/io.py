"""Atomic outputs and Parquet tables with portable paths.

DVC caches whatever is at an output path when a stage exits 0, and a killed stage must not leave
anything that looks finished. Everything is written under a temporary sibling name and renamed
into place at the end (rename is atomic on one filesystem).

Tables store file paths *relative to the table's own directory*, so that a `dvc pull` into another
checkout, or a temporary `dvc exp run` copy, resolves the same files.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def _tmp_sibling(final: Path) -> Path:
    return final.parent / f".{final.name}.tmp-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove_stale(final: Path) -> None:
    """Temporary siblings left by killed processes (SIGKILL skips cleanup) would pile up; remove them."""
    prefix = f".{final.name}.tmp-"
    for cand in final.parent.glob(prefix + "*"):
        pid = cand.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(cand, ignore_errors=True) if cand.is_dir() else cand.unlink(missing_ok=True)


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(final)
    tmp = _tmp_sibling(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final) if final.is_dir() else final.unlink()
    os.replace(tmp, final)


@contextmanager
def atomic_file(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path; it is renamed to `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.stem}.tmp-{os.getpid()}{final.suffix}"
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_file(path) as tmp:
        df.to_parquet(tmp, index=False)


def read_table(path: str | Path) -> pd.DataFrame:
    import pandas as pd

    path = Path(path)
    if not path.exists():
        from semdepth import SemdepthError

        raise SemdepthError(f"{path}: table not found (run the stage that writes it first)")
    return pd.read_parquet(path)


def rel(path: str | Path, table_dir: str | Path) -> str:
    """Path as stored in a table living in `table_dir`."""
    return os.path.relpath(Path(path), Path(table_dir))


def resolve(stored: str | None, table_dir: str | Path) -> Path | None:
    """Inverse of `rel`: a path stored in a table, made usable from the current directory."""
    if stored is None or (isinstance(stored, float) and np.isnan(stored)):
        return None
    p = Path(stored)
    return p if p.is_absolute() else Path(table_dir) / p


def write_csv_rows(path: str | Path, rows: list[dict]) -> None:
    """Small CSV (DVC plots) written atomically."""
    import pandas as pd

    with atomic_file(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


FINGERPRINT = "fingerprint.json"


def write_fingerprint(root: str | Path) -> dict[str, Any]:
    """Write `root/fingerprint.json`: one MD5 over every other file's relative path and content.

    Downstream DVC stages depend on this small file instead of the whole directory. DVC checks a
    directory dependency file by file (a state lookup per file, per consuming stage), and a no-op
    `dvc repro` spent most of its time doing that for thousands of PNGs read by seven stages; the
    producing stage still tracks the directory as its output, so nothing goes unchecked.
    """
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() != FINGERPRINT)
    total, size = hashlib.md5(), 0
    for f in files:
        data = f.read_bytes()
        size += len(data)
        total.update(f"{f.relative_to(root).as_posix()}\0{hashlib.md5(data).hexdigest()}\n".encode())
    record = {"md5": total.hexdigest(), "files": len(files), "bytes": size}
    write_json(root / FINGERPRINT, record)
    return record
