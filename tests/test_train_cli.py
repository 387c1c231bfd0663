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


def test_every_model_field_has_a_flag_and_reaches_the_model():
    argv = ["--num-scales", "2", "--num-blocks", "2", "--mid-channels", "8", "--max-mid-channels", "12",
            "--width-growth", "3", "--final-couplings", "2", "--logit-alpha", "0.01", "--bn-momentum", "0.2",
            "--bn-eps", "1e-3"]  # fmt: skip
    cfg, _, _ = parse(argv)
    flow = cfg.flow_config(1, 28)
    assert (flow.num_scales, flow.num_blocks, flow.mid_channels, flow.max_mid_channels) == (2, 2, 8, 12)
    assert (flow.width_growth, flow.final_couplings, flow.logit_alpha) == (3, 2, 0.01)
    assert (flow.bn_momentum, flow.bn_eps) == (0.2, 1e-3)


def test_every_training_field_has_one_flag_with_help_and_round_trips():
    """One edit adds a hyperparameter: each TrainConfig field (FlowConfig's inherited) gets a flag with help."""
    from dataclasses import fields

    from nvp_core import FlowConfig
    from train.config import TrainConfig

    assert {f.name for f in fields(FlowConfig)} <= {f.name for f in fields(TrainConfig)}
    actions = {a.dest: a for a in build_parser()._actions}
    for f in fields(TrainConfig):
        assert f.name in actions, f"no flag for {f.name}"
        assert actions[f.name].help and f.metadata["help"] in actions[f.name].help, f.name
    changed = {
        "beta1": 0.8,
        "sample_temperatures": (0.9, 0.6),
        "samples_per_temperature": 3,
        "flip": True,
        "half_checkpoint": True,
        "bn_recalibration_batches": 4,
        "in_channels": 3,
        "max_mid_channels": 16,
    }
    argv = ["--beta1", "0.8", "--sample-temperatures", "0.9", "0.6", "--samples-per-temperature", "3", "--flip",
            "--half", "--bn-recalibration", "4", "--channels", "3", "--max-mid-channels", "16"]  # fmt: skip
    cfg, _, _ = parse(argv)
    assert {k: getattr(cfg, k) for k in changed} == changed
    assert TrainConfig.from_json(cfg.to_json()) == cfg


def test_model_defaults_are_flowconfigs():
    from dataclasses import fields

    from nvp_core import FlowConfig
    from train.config import TrainConfig

    cfg, flow = TrainConfig(), FlowConfig()
    shaped = {"in_channels", "image_size"}  # 0 in a training config: the dataset's own
    assert all(getattr(cfg, f.name) == getattr(flow, f.name) for f in fields(FlowConfig) if f.name not in shaped)


def test_an_older_trainers_config_is_upgraded():
    from train.config import TrainConfig

    old = TrainConfig(in_channels=1).to_dict()
    old["channels"] = old.pop("in_channels")
    assert TrainConfig.from_dict(old).in_channels == 1
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({**old, "no_such_option": 1})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bn-momentum", "0"], "bn_momentum must be in (0, 1]"),
        (["--bn-eps", "-1"], "bn_eps must be > 0"),
        (["--logit-alpha", "0.5"], "logit_alpha must be in [0, 0.5)"),
        (["--final-couplings", "0"], "final_couplings must be >= 1"),
        (["--eval-minutes", "-1"], "--eval-minutes and --checkpoint-minutes must be >= 0"),
        (["--width-growth", "0"], "width_growth must be >= 1"),
        (["--logit-alpha", "x"], "invalid float value: 'x'"),
        (["--ema", "1"], "--ema must be in [0, 1)"),
        (["--init-from", "missing.safetensors"], "--init-from missing.safetensors: no such file"),
        (["--init-from", str(ROOT / "README.md")], "--init-from: README.md"),
        (["--init-from", str(ROOT / "models" / "fashion_mnist.safetensors")], "another model"),  # 28x28 for digits
    ],
)
def test_bad_model_flags_exit_2_with_one_line(argv, message, tmp_path, capsys):
    assert _exit_code(main, [*argv, "--dataset", "digits", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "FlowConfig" not in err


def test_runs_saved_before_a_setting_existed_still_resume():
    from train.checkpointing import same_recipe
    from train.config import TrainConfig

    now = TrainConfig().to_dict()
    old = {k: v for k, v in now.items() if k not in ("logit_alpha", "bn_momentum", "final_couplings")}
    assert same_recipe(old, now)
    assert not same_recipe(old, {**now, "bn_momentum": 0.1})


def _exit_code(fn, argv):
    try:
        return fn(argv)
    except SystemExit as e:
        return e.code
