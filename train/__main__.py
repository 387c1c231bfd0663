"""``python -m train`` / ``nvp-train``: train a Real NVP flow. See ``--help``."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from .config import PRESETS

#: Set to 1 to see the traceback of an unexpected error (a bug) instead of the one-line message.
TRACEBACK_ENV = "NVP_TRACEBACK"


def _report(message: str, code: int, once: bool = True) -> int:
    """Prints ``message`` (``once``: only if no other process of the job has reported an error) and returns
    ``code``; in a job of several processes the process ends here, without waiting for a collective that may
    never complete."""
    from .distributed import active, claim_report, linger_for_reports, rank_prefix

    if not once or claim_report():
        print(f"{rank_prefix()}{message}", file=sys.stderr)
    if active():
        if once:
            linger_for_reports()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _finished(result: dict[str, Any], out: Path, command: str) -> None:
    """What the user reads when the run ends: where it is, and the one command that opens it in the app."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    where = shlex.quote(str(out.resolve()))
    if result.get("nothing_to_do"):
        print(
            f"nothing left to do: the run in {where} has finished (step {result['step']}); to train it longer, "
            "raise --epochs, --max-steps or --max-minutes and pass --resume again"
        )
    elif result.get("stopped"):
        again = command if " --resume" in command else f"{command} --resume"
        print(f"stopped at step {result['step']}; continue with: {again}")
    else:
        print(f"run saved in {where} (best.safetensors, last.safetensors, metrics.jsonl, samples/)")
    if not result.get("stopped"):
        print(f"open it in the app: NVP_MODELS_DIR={where} nvp-app")


def main(argv: list[str] | None = None) -> int:
    """Entry point. Exit codes: 0 done, 1 training diverged, a file error or an unexpected error, 2 bad flags or
    data, 130 interrupted. Under ``torchrun`` an error is printed once, by the first process that fails, and
    every process that fails exits at once (none waits for the others)."""
    import torch

    from .cli import parse
    from .distributed import peer_failed
    from .loop import TrainingError, train

    created: Path | None = None  # the run folder, when this invocation created it
    try:
        cfg, opts, args = parse(argv)
        if args.list_presets:
            print(json.dumps(PRESETS, indent=2))
            return 0
        if args.threads:
            torch.set_num_threads(args.threads)
        if not opts.resume and any((opts.out / f"last.state.{ext}").exists() for ext in ("safetensors", "json")):
            raise ValueError(f"{opts.out} already holds a run; pass --resume to continue it, or choose another --out")
        try:
            if not opts.out.exists():
                created = opts.out
            opts.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(
                f"--out {opts.out}: cannot create the run folder ({e.strerror}); choose another --out"
            ) from None
        if not os.access(opts.out, os.W_OK):
            raise ValueError(f"--out {opts.out}: the run folder is not writable; choose another --out")
        result = train(cfg, opts)
    except TrainingError as e:
        return _report(f"error: {e}", 1)
    except ValueError as e:  # bad flags, data or resume state: the message names the fix
        _remove_if_empty(created)  # a run that never started leaves no empty folder behind
        return _report(f"error: {e}", 2)
    except OSError as e:  # e.g. a full disk while saving: the previous checkpoint and state stay intact
        return _report(f"error: could not read or write a file: {e}", 1)
    except KeyboardInterrupt:
        return _report("\ninterrupted; continue with the same flags and --resume", 130)
    except Exception as e:  # a bug, or a failure of another process of the job: a message, not a traceback
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        _remove_if_empty(created)
        if peer_failed(e):  # the process that failed first prints the reason; this one only ends
            return _report("stopped: another process of this job failed (its message says why)", 1, once=False)
        return _report(
            f"error: unexpected {type(e).__name__}: {e}\n(this is a bug or a failure of the machine; "
            f"{TRACEBACK_ENV}=1 shows the traceback)",
            1,
        )
    _finished(result, opts.out, opts.command)
    return 0


def _remove_if_empty(folder: Path | None) -> None:
    if folder is not None:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty: anything the run wrote stays


if __name__ == "__main__":
    sys.exit(main())
