"""The documentation works: every example in README.md and docs/*.md runs, every command it shows exists.

- Blocks fenced ```python run, each file's blocks in order in one namespace, in a fresh working directory,
  with ``MLFLOW_TRACKING_URI`` pointing at a private SQLite store. A failure names the file and the line
  of the block, and the traceback points at the Markdown lines themselves.
- A ```python block right after the line ``<!-- spark -->`` needs pyspark and Java. Without them it is
  skipped (and the test reports the skip), except under ``CI=true``, where a missing Spark fails the test.
  Such blocks must not define names that later blocks need.
- Blocks fenced ```bash, ```sh, ```shell, ```console or unlabelled are not run; every ``embedkit COMMAND
  ...`` in them must parse with the real command-line parsers, and every ``make TARGET`` must be a target
  of the Makefile. ```text blocks are left alone.
- Every ``EMBEDKIT_*`` variable the docs name is a setting of the service, and docs/service.md names them
  all; relative links between the documents resolve.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import os
import re
import shlex
import shutil
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest

from embedkit import datasets

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

PYTHON = {"python", "py", "python3"}
SHELL = {"bash", "sh", "shell", "console", ""}
SPARK_MARK = "<!-- spark -->"
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SETTING = re.compile(r"\bEMBEDKIT_[A-Z0-9_]+\b")
_LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the block's first code line
    lang: str
    code: str
    spark: bool

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the line each starts on."""
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m["indent"]), m["fence"], m["lang"].lower()
        previous = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
        start = i + 1
        end = start
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if end == len(lines):
            raise AssertionError(f"{path.relative_to(ROOT)}:{i + 1}: the code block is never closed")
        code = "\n".join(ln[indent:] if ln[:indent].isspace() else ln for ln in lines[start:end])
        out.append(Block(path, start + 1, lang, code + "\n", previous == SPARK_MARK))
        i = end + 1
    return out


def _param(path: Path) -> pytest.ParameterSet:
    marks = [pytest.mark.slow, *([pytest.mark.spark] if any(b.spark for b in blocks(path)) else [])]
    return pytest.param(path, id=str(path.relative_to(ROOT)), marks=marks)


WITH_PYTHON = [_param(p) for p in DOCS if any(b.lang in PYTHON for b in blocks(p))]


# ---- the Python examples run -----------------------------------------------------------------------
def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def spark_missing() -> str | None:
    """Why Spark cannot run here, or None when it can."""
    try:
        importlib.import_module("pyspark")
    except ImportError as exc:
        return f"pyspark does not import ({exc})"
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        return "no Java (neither java on PATH nor JAVA_HOME)"
    return None


def run_block(block: Block, namespace: dict[str, object]) -> None:
    # Padded with blank lines so that the compiled code's line numbers are the Markdown file's.
    code = compile("\n" * (block.line - 1) + block.code, str(block.path), "exec")
    try:
        exec(code, namespace)
    except Exception:
        pytest.fail(f"{block.where}: this ```python block failed:\n{traceback.format_exc()}", pytrace=False)


_read_flights = datasets.flights_raw  # the real reader, before sandbox() patches the name


@functools.cache
def _flights_raw() -> pd.DataFrame:
    return _read_flights()


@contextlib.contextmanager
def sandbox(tmp_path: Path) -> Iterator[None]:
    """A fresh working directory, a private MLflow store, the environment restored afterwards.

    Two things only make the examples faster, not different: torch computes on one thread (the test
    machines' cores are shared, where more threads wait on each other), and the example's CSV is parsed
    once for all files (``flights()`` gets a copy of the same raw frame).
    """
    import torch

    previous, threads = Path.cwd(), torch.get_num_threads()
    with (
        mock.patch.dict(os.environ),
        mock.patch("embedkit.datasets.flights_raw", lambda: _flights_raw().copy()),
    ):
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
        os.environ["MPLBACKEND"] = "Agg"
        os.chdir(tmp_path)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            os.chdir(previous)
            mlflow = importlib.import_module("mlflow") if "mlflow" in sys.modules else None
            if mlflow is not None:
                while mlflow.active_run() is not None:
                    mlflow.end_run()


@pytest.mark.parametrize("path", WITH_PYTHON)
def test_python_examples_run(path: Path, tmp_path: Path) -> None:
    namespace: dict[str, object] = {"__name__": "__main__"}
    skipped: list[str] = []
    no_spark = spark_missing() if any(b.spark for b in blocks(path)) else None
    with sandbox(tmp_path):
        for block in blocks(path):
            if block.lang not in PYTHON:
                continue
            assert block.spark or "pyspark" not in block.code, (
                f"{block.where}: this example uses Spark: put the line {SPARK_MARK} right before it"
            )
            if block.spark and no_spark:
                if _in_ci():
                    pytest.fail(f"{block.where}: a Spark example cannot run under CI: {no_spark}")
                skipped.append(block.where)
                continue
            run_block(block, namespace)
    if skipped:
        pytest.skip(f"every other example ran; Spark examples skipped ({no_spark}): {', '.join(skipped)}")


# ---- the commands exist ----------------------------------------------------------------------------
def commands(block: Block) -> Iterator[list[str]]:
    """The simple commands of a shell block, as argv lists (prompts, comments and env assignments dropped)."""
    buffer = ""
    for raw in block.code.splitlines():
        line = raw
        if block.lang == "console" and not buffer:
            if not line.lstrip().startswith("$ "):
                continue  # program output
            line = line.lstrip()[2:]
        buffer = f"{buffer}\n{line}" if buffer else line
        if buffer.rstrip().endswith("\\"):
            buffer = buffer.rstrip()[:-1] + " "
            continue
        try:
            tokens = shlex.split(buffer, comments=True)
        except ValueError:
            continue  # a quoted string goes on over the next line
        buffer = ""
        command: list[str] = []
        for token in [*tokens, ";"]:
            if token in (";", "&&", "||", "|", "&"):
                while command and _ENV_ASSIGNMENT.match(command[0]):
                    command.pop(0)
                if command:
                    yield command
                command = []
            else:
                command.append(token)
    assert not buffer, f"{block.where}: cannot read this shell block (unbalanced quotes?): {buffer[:80]!r}"


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m[1] for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M) if not m[1].startswith(".")}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the embedkit parser has no subcommands")


def check_embedkit(argv: list[str], where: str) -> None:
    """``argv`` (after ``embedkit``) parses: the subcommand exists and takes these options."""
    from pipelines import cli

    parser = cli._parser()
    names = _subcommands(parser)
    rest = list(argv)
    while rest and rest[0].startswith("-"):  # global options before the command
        rest.pop(0)
    assert rest, f"{where}: `embedkit {' '.join(argv)}` names no command"
    command = rest[0]
    assert command in names, f"{where}: `embedkit {command}` is not a command; embedkit has {sorted(names)}"
    if command in cli.EXTERNAL:
        module = importlib.import_module(cli.EXTERNAL[command][0])
        build = getattr(module, "build_parser", None)
        if build is None:
            return
        parser, argv = build(), rest[1:]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            assert exc.code in (0, None), (
                f"{where}: `embedkit {' '.join(argv)}` does not parse: {err.getvalue()}"
            )


def _is_python(token: str) -> bool:
    return re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", token) is not None


@pytest.mark.parametrize("path", [pytest.param(p, id=str(p.relative_to(ROOT))) for p in DOCS])
def test_shell_commands_exist(path: Path) -> None:
    targets = make_targets()
    for block in blocks(path):
        if block.lang not in SHELL:
            continue
        for argv in commands(block):
            name = Path(argv[0]).name
            if name == "embedkit":
                check_embedkit(argv[1:], block.where)
            elif _is_python(argv[0]) and argv[1:3] == ["-m", "pipelines.cli"]:
                check_embedkit(argv[3:], block.where)
            elif _is_python(argv[0]) and argv[1:3] == ["-m", "service"]:
                check_embedkit(["serve", *argv[3:]] if argv[3:4] != ["serve"] else argv[3:], block.where)
            elif name == "make":
                for target in argv[1:]:
                    if not target.startswith("-") and "=" not in target:
                        assert target in targets, (
                            f"{block.where}: `make {target}` is not a Makefile target; there are {sorted(targets)}"
                        )


def test_the_checks_see_commands() -> None:
    """The command reader finds what it must (a reader that finds nothing would pass every file)."""
    block = Block(
        ROOT / "README.md",
        1,
        "bash",
        "make demo  # a comment's apostrophe isn't a quote\n"
        "EMBEDKIT_API_KEY=k embedkit serve --model-uri x \\\n  --port 1 && curl -d '{\"a\":\n  1}' x\n",
        False,
    )
    assert list(commands(block)) == [
        ["make", "demo"],
        ["embedkit", "serve", "--model-uri", "x", "--port", "1"],
        ["curl", "-d", '{"a":\n  1}', "x"],
    ]
    with pytest.raises(AssertionError, match="not a command"):
        check_embedkit(["trian", "--config", "x"], "here")
    with pytest.raises(AssertionError, match="does not parse"):
        check_embedkit(["downstream", "--config", "x", "--no-such-flag"], "here")
    check_embedkit(["serve", "--model-uri", "models:/m@a", "--port", "8000"], "here")
    assert {"demo", "test"} <= make_targets()


# ---- settings and links ----------------------------------------------------------------------------
def test_documented_settings_are_the_real_ones() -> None:
    from service.settings import Settings

    real = {f"EMBEDKIT_{name.upper()}" for name in Settings.model_fields}
    for path in DOCS:
        named = set(_SETTING.findall(path.read_text(encoding="utf-8")))
        assert named <= real, (
            f"{path.relative_to(ROOT)} names settings that do not exist: {sorted(named - real)}"
        )
    service_doc = set(_SETTING.findall((ROOT / "docs" / "service.md").read_text(encoding="utf-8")))
    assert real <= service_doc, f"docs/service.md does not describe {sorted(real - service_doc)}"


def test_relative_links_resolve() -> None:
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for m in _LINK.finditer(text):
            target = m["target"].split("#", 1)[0]
            if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # an anchor in the same page, or a URL
            line = text.count("\n", 0, m.start()) + 1
            assert (path.parent / target).exists(), (
                f"{path.relative_to(ROOT)}:{line}: the link to {target} leads nowhere"
            )
