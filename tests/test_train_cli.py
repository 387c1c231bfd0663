"""The command line: help, bad flags and missing data end with a clear message and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from train.__main__ import main
from train.cli import build_parser, parse

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_flag_of_the_issue():
    text = build_parser().format_help()
    flags = "--dataset --data-dir --preset --image-size --epochs --max-steps --batch-size --lr --device --out"
    for flag in (flags + " --resume --seed --num-scales --num-blocks --mid-channels --max-minutes").split():
        assert flag in text


def test_flags_override_the_preset():
    cfg, opts, _ = parse(["--preset", "fashion-mnist", "--mid-channels", "8", "--out", "x"])
    assert cfg.mid_channels == 8 and cfg.dataset == "fashion-mnist" and opts.out == Path("x")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--dataset", "digits", "--num-scales", "4"], "does not fit 4 scales"),
        (["--dataset", "nope", "--out", "{tmp}"], "unknown dataset 'nope'"),
        (["--dataset", "fashion-mnist", "--data-dir", "{tmp}/missing", "--out", "{tmp}"], "dataset-fashion-mnist"),
        (["--dataset", "cifar10", "--out", "{tmp}"], "pip install torchvision"),
        (["--preset", "digits-tiny", "--out", "{tmp}", "--resume"], "nothing to resume"),
    ],
)
def test_bad_settings_exit_2_with_a_message(argv, message, tmp_path, capsys):
    pytest.importorskip("sklearn")
    if "cifar10" in argv and _has_torchvision():
        pytest.skip("torchvision is installed: cifar10 would download")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unknown_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--no-such-flag"])
    assert e.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_refuses_to_overwrite_a_run_without_resume(tmp_path, capsys):
    (tmp_path / "last.state.json").write_text("{}")
    assert main(["--preset", "digits-tiny", "--out", str(tmp_path)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_module_entry_point_has_no_traceback(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2
    assert "dataset-fashion-mnist" in r.stderr and "--data-dir" in r.stderr and "Traceback" not in r.stderr


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True
