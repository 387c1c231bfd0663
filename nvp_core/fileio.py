"""Atomic file writes: a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Calls ``write(tmp_path)`` on a temporary file in ``path``'s folder, flushes it to disk, then renames it
    over ``path``. On any failure (disk full, permission, interrupt) the temporary file is removed and the
    previous ``path``, if any, is left intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; give it the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# What atomic_write's temporary files look like: "." + target name + "." + mkstemp's 8 random characters + ".tmp".
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Deletes the temporary files that :func:`atomic_write` leaves in ``folder`` when its process is killed
    (SIGKILL, power loss) between creating and renaming them; returns what was deleted. Call it only when no
    other process writes into ``folder`` (e.g. when a training run starts or resumes in its own folder)."""
    removed = []
    for p in Path(folder).glob(".*.tmp"):
        if _TEMP_NAME.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def read_json_lines(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file; other lines are skipped (a run may be writing the last one)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def user_cache_dir() -> Path:
    """``~/.cache/nvp-explorer`` (``$XDG_CACHE_HOME`` honoured): what is measured or computed once per machine."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nvp-explorer"


def file_digest(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes (hex): a key that changes exactly when the content does."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
