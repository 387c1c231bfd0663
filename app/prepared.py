"""The app's preparation of a model (:func:`app.models.prepare_app_model`: its fast path and frozen graphs), made
once per checkpoint and machine in a child process and kept on disk.

Preparing runs a few thousand small torch calls from Python (reference pictures, tracing); in the server, each of
them gives up the GIL and waits for the sessions' Python to hand it back (``python -m bench.frozen`` measures that
wait on one eager pass), so the preparation would crawl while a class is busy and the pages run on the slower model
as loaded meanwhile. A child process has a GIL of its own: it prepares the model, writes the frozen graphs and its
report to the cache, and the server loads them in a fraction of a second; the next start of any server on this
machine only loads them.

    python -m app.prepared CHECKPOINT FOLDER THREADS    # what the server runs (the child)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

import nvp_core
from nvp_core import RealNVP, load_model
from nvp_core.fastpath import FastPath
from nvp_core.fastpath_choice import machine_key
from nvp_core.fileio import file_digest, user_cache_dir
from nvp_core.freezing import load_frozen, save_frozen

log = logging.getLogger(__name__)
ENV_CACHE = "NVP_PREPARED_CACHE"
FORMAT = 1
#: A child that has not finished by then is stopped (the server then prepares in its own process).
CHILD_TIMEOUT_S = 900


def _code_digest() -> str:
    """The source of ``nvp_core`` and of the preparation: graphs traced from other code are not this code's."""
    h = hashlib.sha256()
    here = Path(__file__)
    for f in sorted([*Path(nvp_core.__file__).parent.glob("*.py"), here, here.with_name("models.py")]):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def cache_folder(checkpoint: Path) -> Path:
    """Where the preparation of ``checkpoint`` on this machine is kept (``$NVP_PREPARED_CACHE`` or
    ``user_cache_dir()/prepared``): keyed by the checkpoint's content, the machine, torch and its threads, and the
    code that prepares and runs it."""
    key = {
        "format": FORMAT,
        "checkpoint": file_digest(checkpoint),
        "machine": machine_key(torch.device("cpu")),
        "code": _code_digest(),
    }
    env = os.environ.get(ENV_CACHE)
    base = Path(env).expanduser() if env else user_cache_dir() / "prepared"
    return base / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def load(model: RealNVP, folder: Path) -> dict[str, Any] | None:
    """Applies a kept preparation to ``model`` and returns its report, or ``None`` (model untouched) when there is
    none or it cannot be read."""
    try:
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        path = FastPath.from_name(report["path"])
        if report["freezing"]["frozen"]:
            load_frozen(model, folder)
    except Exception as e:  # missing, half-written or from another torch: prepared again
        if (folder / "report.json").exists():
            log.warning("prepared model in %s not used (%s: %s)", folder, type(e).__name__, e)
        return None
    path.apply(model)
    return {**report, "source": f"{report.get('source', 'measured')}, kept on disk"}


def load_or_make(model: RealNVP, checkpoint: Path) -> dict[str, Any] | None:
    """The kept preparation of ``checkpoint`` applied to ``model`` (its weights), made first in a child process
    when there is none; ``None`` when the child failed (the caller then prepares in its own process)."""
    folder = cache_folder(checkpoint)
    report = load(model, folder)
    if report is not None:
        return report
    cmd = [sys.executable, "-m", "app.prepared", str(checkpoint), str(folder), str(torch.get_num_threads())]
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("preparing %s in a child process failed (%s)", checkpoint.name, e)
        return None
    if done.returncode != 0:
        log.warning("preparing %s in a child process failed: %s", checkpoint.name, done.stderr.strip()[-500:])
        return None
    return load(model, folder)


def main(argv: list[str]) -> int:
    """The child: prepares the checkpoint with the server's threads and writes it to the folder in one rename."""
    from app.models import prepare_app_model  # the app's one definition of a prepared model

    checkpoint, folder, threads = Path(argv[0]), Path(argv[1]), int(argv[2])
    if hasattr(os, "nice"):
        os.nice(10)  # background work: the server's sessions come first
    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    model, _ = load_model(checkpoint)
    report = prepare_app_model(model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        if report["freezing"].get("frozen"):
            save_frozen(model, tmp)
        (tmp / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
