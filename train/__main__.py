"""``python -m train`` / ``nvp-train``: train a Real NVP flow. See ``--help``."""

from __future__ import annotations

import json
import os
import sys

from .config import PRESETS


def main(argv: list[str] | None = None) -> int:
    """Entry point. Exit codes: 0 done, 1 training diverged or a file error, 2 bad flags or data, 130 interrupted."""
    import torch

    from .cli import parse
    from .loop import TrainingError, train

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
            opts.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(
                f"--out {opts.out}: cannot create the run folder ({e.strerror}); choose another --out"
            ) from None
        if not os.access(opts.out, os.W_OK):
            raise ValueError(f"--out {opts.out}: the run folder is not writable; choose another --out")
        train(cfg, opts)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # bad flags, data or resume state: the message names the fix
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a full disk while saving: the previous checkpoint and state stay intact
        print(f"error: could not read or write a file: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; continue with the same flags and --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
