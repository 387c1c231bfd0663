"""bench.sweep: recipes parsed, run folders summarised from the trainer's own files."""

from __future__ import annotations

import json

import pytest

from bench.sweep import RECIPES, _command, _parse, summarize


def test_summary_reads_the_trainers_files(tmp_path):
    (tmp_path / "log.txt").write_text("2026-01-01 00:00:00Z started: x, 1 train / 1 test images [1, 28, 28], "
                                      "5279249 parameters, 1 process(es) on cpu\n")  # fmt: skip
    recs = [
        {"step": 10, "epoch": 0.5, "test_bpd": 3.51234, "images_per_s": 100.0},
        {"step": 20, "epoch": 1.0, "test_bpd": 3.40001, "images_per_s": 120.0},
        {"step": 30, "epoch": 1.5, "test_bpd": 3.41, "images_per_s": 110.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n{broken\n")
    s = summarize(tmp_path)
    assert s == {"params_M": 5.28, "steps": 30, "epochs": 1.5, "images_per_s": 110.0, "scored_on": "test",
                 "final_bpd": "3.4100", "best_bpd": "3.4000"}  # fmt: skip


def test_the_validation_split_scores_where_there_is_one(tmp_path):
    (tmp_path / "log.txt").write_text("")
    recs = [{"step": 10, "epoch": 0.5, "validation_bpd": 3.5, "images_per_s": 1.0},
            {"step": 20, "epoch": 1.0, "validation_bpd": 3.3, "test_bpd": 3.2, "images_per_s": 1.0}]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    s = summarize(tmp_path)
    assert s["scored_on"] == "validation" and s["final_bpd"] == s["best_bpd"] == "3.3000"


def test_a_run_that_never_evaluated_has_no_figures(tmp_path):
    assert summarize(tmp_path)["final_bpd"] is None


def test_recipes_and_flags_reach_the_trainer(tmp_path):
    args = _parse(["--minutes", "3", "--recipe", "mine=--num-blocks 3", "--recipes", "base,mine", "--threads", "2"])
    assert list(args.chosen) == ["base", "mine"] and args.parallel == 2
    cmd = _command(args.chosen["mine"], tmp_path, args)
    assert cmd[cmd.index("--max-minutes") + 1] == "3.0" and "--num-blocks" in cmd and cmd[-1] == str(tmp_path)
    from train.cli import parse

    cfg, _, _ = parse(cmd[3:])  # the trainer accepts every built-in recipe as given
    assert cfg.num_blocks == 3 and cfg.max_minutes == 3.0
    for flags in RECIPES.values():
        parse(_command(flags, tmp_path, args)[3:])


BAD = [["--recipes", "nope"], ["--recipe", "noequals"], ["--minutes", "0"], ["--nice", "20"]]


@pytest.mark.parametrize("argv", BAD)
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        _parse(argv)
    assert e.value.code == 2 and "error" in capsys.readouterr().err
