"""``python -m train`` with bad input, as a real subprocess: a clear message on stderr, exit code 2, no
traceback. And the folder dataset reader on the hostile image corpus: unreadable files skipped and counted."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from hostile import corpus

from train.__main__ import main
from train.data.folder import IMAGE_SUFFIXES, load_folder

ROOT = Path(__file__).resolve().parents[1]


def _write_corpus(root: Path, expect: str | None = None) -> tuple[int, int]:
    """Writes the corpus (or its ``expect`` part) under ``root``; returns (readable, unreadable) image files."""
    ok = bad = 0
    for i, case in enumerate(corpus()):
        if expect and case.expect != expect:
            continue
        path = root / f"{i:02d}_{case.filename}"
        path.write_bytes(case.data)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            ok += case.expect == "ok"
            bad += case.expect == "error"
    return ok, bad


def _cli_all(argvs: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Runs ``python -m train`` once per argv, a few at a time (each mostly waits on its imports)."""

    def one(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "train", "--threads", "1", "--no-progress", *argv],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(one, argvs))


@pytest.mark.timeout(600)
def test_bad_command_lines_exit_2_with_a_message(tmp_path: Path) -> None:
    bad_only = tmp_path / "bad_only"
    bad_only.mkdir()
    _, n_bad = _write_corpus(bad_only, expect="error")
    (tmp_path / "a_file").write_text("not a folder")
    cases = [
        (["--lr", "abc"], "argument --lr: invalid float value: 'abc'"),
        (["--dataset", "digits", "--image-size", "10", "--num-scales", "3", "--out", str(tmp_path / "r")],
         "divisible by 2^(scales-1) = 4"),
        (["--dataset", f"folder:{tmp_path / 'missing'}", "--out", str(tmp_path / "r")], "is not a folder"),
        (["--dataset", f"folder:{bad_only}", "--out", str(tmp_path / "r")],
         f"found 0 readable image(s) under {bad_only} ({n_bad} unreadable skipped)"),
        (["--preset", "digits-tiny", "--max-steps", "2", "--out", str(tmp_path / "a_file" / "run")], "a_file"),
    ]  # fmt: skip
    failures = []
    for (argv, message), proc in zip(cases, _cli_all([argv for argv, _ in cases]), strict=True):
        if proc.returncode != 2 or message not in proc.stderr or "Traceback" in proc.stderr:
            failures.append(f"{argv}: exit {proc.returncode}, stderr tail: {proc.stderr[-600:]!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "1.5"], "argument --epochs: invalid int value"),
        (["--preset", "digits-tiny", "--bogus-flag", "1"], "unrecognized arguments: --bogus-flag"),
        (["--channels", "2"], "argument --channels: invalid choice"),
        (["--precision", "fp8"], "argument --precision: invalid choice"),
    ],
)
def test_usage_errors_in_process(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err, err


@pytest.mark.timeout(120)
def test_folder_reader_skips_and_counts_every_unreadable_file(tmp_path: Path) -> None:
    n_ok, n_bad = _write_corpus(tmp_path)
    (tmp_path / "notes.txt").write_text("not listed: wrong suffix")
    (tmp_path / ".hidden.png").write_bytes(b"hidden files are not listed")
    splits = load_folder(tmp_path, image_size=8, channels=0, test_fraction=0.25)
    assert splits.skipped == n_bad >= 15
    assert len(splits.train) + len(splits.test) == n_ok >= 15
    assert splits.train.dtype == torch.uint8 and tuple(splits.train.shape[1:]) == (3, 8, 8)


@pytest.mark.timeout(300)
def test_training_on_a_hostile_folder_reports_the_skipped_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    n_ok, n_bad = _write_corpus(data)
    threads = torch.get_num_threads()
    try:
        rc = main([f"--dataset=folder:{data}", "--image-size", "8", "--num-scales", "2", "--mid-channels", "4",
                   "--num-blocks", "1", "--batch-size", "4", "--max-steps", "2", "--epochs", "0", "--threads", "1",
                   "--no-progress", "--precision", "fp32", "--out", str(tmp_path / "run")])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    log = (tmp_path / "run" / "log.txt").read_text()
    assert f"{n_bad} unreadable files skipped" in log, log
