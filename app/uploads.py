"""Where uploaded checkpoints are kept on a shared server: one bounded folder (Streamlit-free, so it is tested alone).

Environment: ``NVP_APP_CHECKPOINT_UPLOADS`` (``0``/``off``/``false``/``no`` turns checkpoint uploads off, for public
deployments), ``NVP_APP_UPLOAD_DIR`` (default ``<tmp>/nvp_app_checkpoints``) and ``NVP_APP_UPLOADS_MB`` (the folder's
total size; the oldest files are removed beyond it; default 1000).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from nvp_core.fileio import atomic_write

MAX_CHECKPOINT_MB = 200  # one checkpoint upload (also the uploader's limit)
DEFAULT_FOLDER_MB = 1000


def enabled() -> bool:
    """False when ``$NVP_APP_CHECKPOINT_UPLOADS`` turns checkpoint uploads off."""
    return os.environ.get("NVP_APP_CHECKPOINT_UPLOADS", "").strip().lower() not in {"0", "off", "false", "no"}


def folder() -> Path:
    env = os.environ.get("NVP_APP_UPLOAD_DIR", "")
    return Path(env).expanduser() if env else Path(tempfile.gettempdir()) / "nvp_app_checkpoints"


def folder_limit_bytes() -> int:
    """``$NVP_APP_UPLOADS_MB`` in bytes (at least one checkpoint's worth), else the default."""
    env = os.environ.get("NVP_APP_UPLOADS_MB", "").strip()
    mb = int(env) if re.fullmatch(r"[0-9]{1,7}", env) else DEFAULT_FOLDER_MB
    return max(mb, 1) * 2**20


def store(data: bytes, where: Path | None = None) -> Path:
    """Writes ``data`` as ``<sha256 prefix>.safetensors`` in the upload folder (atomically: a session uploading
    the same file never reads it half-written). Call :func:`admit` once it loads as a model, else delete it."""
    where = folder() if where is None else where
    path = where / f"{hashlib.sha256(data).hexdigest()[:16]}.safetensors"
    if not path.exists():
        # Not touched when it exists: its modification time is part of the model's cache key (state.stamp), and
        # every rerun of a session with an upload stores it again.
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return path


def admit(path: Path, limit: int | None = None) -> None:
    """Keeps the accepted upload ``path`` and removes the earliest stored others until its folder holds at
    most ``limit`` bytes (default :func:`folder_limit_bytes`). A session whose model was removed stores it again
    from its own upload on its next rerun."""
    prune(path.parent, folder_limit_bytes() if limit is None else limit, keep=path)


def prune(where: Path, limit: int, keep: Path) -> None:
    """Removes the oldest ``*.safetensors`` in ``where`` (never ``keep``) while their total exceeds ``limit``."""
    files = []
    for p in where.glob("*.safetensors"):
        try:
            s = p.stat()
        except FileNotFoundError:  # another session removed it meanwhile
            continue
        files.append((s.st_mtime_ns, s.st_size, p))
    total = sum(size for _, size, _ in files)
    for _, size, p in sorted(files, key=lambda f: f[0]):
        if total <= limit:
            break
        if p == keep:
            continue
        p.unlink(missing_ok=True)
        total -= size
