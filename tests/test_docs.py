"""The user docs stay true: README's set-up commands are the ones CI runs, its library snippet runs, every
command the docs give names a module, script and flags that exist (trainer commands parse), and every link
points at a file that is there."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "models" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROJECT = ("nvp_core", "train", "app", "bench")
_SCRIPTS_SECTION = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
SCRIPTS = set(re.findall(r"^([\w-]+)\s*=", _SCRIPTS_SECTION, flags=re.M))  # tomllib needs Python 3.11


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _after_marker(text: str, marker: str) -> str:
    rest = text.split(f"<!-- {marker} -->", 1)[1]
    return _blocks(rest, "bash")[0].strip()


def _commands(text: str) -> list[list[str]]:
    """Each command of the doc's bash blocks and inline code that starts like a command, as argv lists."""
    found: list[list[str]] = []
    for block in _blocks(text, "bash"):
        variables: dict[str, str] = {}
        for line in block.splitlines():
            tokens = shlex.split(line, comments=True)
            if len(tokens) == 1 and re.fullmatch(r"[A-Za-z_]\w*=.*", tokens[0]):
                name, value = tokens[0].split("=", 1)
                variables[name] = value
                continue
            expanded: list[str] = []
            for t in tokens:
                expanded += shlex.split(variables[t[1:]]) if t.startswith("$") and t[1:] in variables else [t]
            found += _split(expanded)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for code in re.findall(r"`((?:python3? |torchrun |nvp-|streamlit run )[^`]*)`", prose):
        found += _split(shlex.split(code))
    return found


def _split(tokens: list[str]) -> list[list[str]]:
    out, current = [], []
    for t in tokens:
        if t in ("&&", "||", "|", ";"):
            out.append(current)
            current = []
        else:
            current.append(t)
    out.append(current)
    # Leading VAR=value assignments are environment, not the command.
    return [c[next((i for i, t in enumerate(c) if not re.fullmatch(r"[A-Z_]+=\S*", t)), len(c)) :] for c in out if c]


def _source_of(module: str) -> str:
    path = ROOT.joinpath(*module.split("."))
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    assert files and all(f.is_file() for f in files), f"no module {module}"
    if path.is_dir():
        assert (path / "__main__.py").is_file(), f"python -m {module}: the package has no __main__.py"
    return "\n".join(f.read_text() for f in files)


def _check_flags(argv: list[str], source: str, what: str, options: frozenset[str] | set[str] = frozenset()) -> None:
    """Each ``--flag`` is an option of the parser (``options``) or, for other scripts, a literal in their source."""
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and flag != "--help":
            assert flag in options or f'"{flag}"' in source, f"{what}: no flag {flag}"


def _check(argv: list[str], doc: str) -> None:
    what = f"{doc}: {shlex.join(argv)}"
    if argv[0] == "torchrun":
        argv = ["python", *argv[argv.index("-m") :]]
    if argv[0] in ("python", "python3") and argv[1:2] == ["-m"]:
        module, args = argv[2], argv[3:]
        if module.split(".")[0] not in PROJECT:
            return  # venv, pip, pytest, mypy, streamlit: not ours
        options: set[str] = set()
        if module == "train":
            from train.cli import build_parser, parse

            options = set(build_parser()._option_string_actions)  # the trainer's flags are generated, not literals
            if not {"--help", "-h"} & set(args):
                try:
                    parse(args)
                except (SystemExit, ValueError) as e:
                    if not re.fullmatch(r"--init-from runs/\S+: no such file", str(e)):  # an earlier command makes it
                        pytest.fail(f"{what}: does not parse ({e})")
        _check_flags(args, _source_of(module), what, options)
    elif argv[0] in ("python", "python3"):
        script = ROOT / argv[1]
        assert script.is_file(), f"{what}: no script {argv[1]}"
        _check_flags(argv[2:], script.read_text(), what)
    elif argv[0].startswith("nvp-"):
        assert argv[0] in SCRIPTS, f"{what}: not an installed command"
    elif argv[:2] == ["streamlit", "run"]:
        assert (ROOT / argv[2]).is_file(), what


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_in_the_docs_exists_and_trainer_commands_parse(doc: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # paths in the docs are relative to the repository
    commands = _commands(doc.read_text())
    assert commands, "a user doc without one command to run"
    for argv in commands:
        _check(argv, str(doc.relative_to(ROOT)))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_in_the_docs_points_at_a_file(doc: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if "://" in target or target.startswith("#"):
            continue
        assert (doc.parent / target.split("#")[0]).exists(), f"{doc.name}: broken link {target}"


def test_the_readme_gives_two_set_up_commands_and_ci_reads_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    app, tests = _after_marker(readme, "app-command"), _after_marker(readme, "test-command")
    assert "\n" not in app and "\n" not in tests, "each set-up is one command"
    assert app.endswith("nvp-app") and "pip install" in app
    assert "pip install" in tests and "'.[dev]'" in tests and tests.endswith("python -m pytest")
    # The extraction .ci/run itself does (its awk line, run as it is) finds the same command.
    awk = next(line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "awk" in line)
    got = subprocess.run(["bash", "-c", f'{awk}\nprintf %s "$cmd"'], cwd=ROOT, capture_output=True, text=True)
    assert got.stdout == tests


def test_the_readme_library_snippet_runs(monkeypatch) -> None:
    if not (ROOT / "models" / "fashion_mnist.safetensors").is_file():
        pytest.skip("the shipped model is not in models/")
    (snippet,) = _blocks((ROOT / "README.md").read_text(), "python")
    assert len([line for line in snippet.splitlines() if line and not line.startswith(("import", "from"))]) == 5
    monkeypatch.chdir(ROOT)
    torch.manual_seed(0)  # the snippet draws its input with torch.rand: one fixed draw, not a new one per run
    ns: dict = {}
    exec(compile(snippet, "README.md", "exec"), ns)
    x, zs = ns["x"], ns["zs"]
    assert len(zs) == ns["model"].config.num_scales and ns["logdet"].shape == (2,)
    assert (ns["x_back"] - x).abs().max() < 1e-4, "the README promises an exact inverse"
    assert ns["samples"].shape == (16, 1, 28, 28)
