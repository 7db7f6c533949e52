"""The docs build, their links resolve, and every command they show as runnable is accepted.

* ``mkdocs build --strict`` of ``docs/`` (skipped where mkdocs is not importable; CI installs the
  ``docs`` extra);
* every relative link and image in ``README.md`` and ``docs/*.md`` names an existing file, and a
  ``#fragment`` into a Markdown page names one of its headings;
* every ``distgcl ...`` line of a ``bash`` / ``sh`` code block parses with the CLI's own
  argparse parser, and every ``python bench/X.py ...`` line names an existing script whose own
  argparse parser (taken from its ``main()``) accepts the line.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import unicodedata
from functools import lru_cache
from pathlib import Path

import pytest

from distgcl.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")


def _prose(text: str) -> str:
    """``text`` without fenced blocks and inline code (links there are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slugify(title: str) -> str:
    """Python-Markdown's ``toc`` slug (what mkdocs uses for heading anchors)."""
    value = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def headings(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    titles = re.finditer(r"^#+\s+(.+?)\s*$", text, re.M)
    return {slugify(m.group(1).replace("`", "")) for m in titles}


def broken_links(page: Path) -> list[str]:
    """Every relative link of ``page`` that does not resolve, as ``'target (why)'``."""
    bad = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in headings(dest):
            bad.append(f"{target} (no heading #{fragment} in {dest.name})")
    return bad


def shell_lines(text: str) -> list[str]:
    """The logical lines (continuations joined, comments dropped) of ``text``'s bash/sh blocks;
    ``unshare ... sh -c 'A; B'`` contributes its inner commands A and B."""
    out: list[str] = []
    for lang, body in FENCE.findall(text):
        if lang not in ("bash", "sh", "shell", "console"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:
                continue
            if tokens[:1] == ["unshare"] and "-c" in tokens:
                inner = tokens[tokens.index("-c") + 1]
                out += [c.strip() for c in re.split(r";|&&", inner) if c.strip()]
            elif tokens:
                out.append(shlex.join(tokens))
    return out


def _strip_env(tokens: list[str]) -> list[str]:
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):
        tokens = tokens[1:]
    return tokens


def commands(prefix: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for line in shell_lines(page.read_text()):
            tokens = _strip_env(shlex.split(line))
            if tuple(tokens[:len(prefix)]) == prefix or (
                    prefix == ("python", "bench") and len(tokens) > 1
                    and tokens[0] in ("python", "python3") and tokens[1].startswith("bench/")):
                found.append((page.name, tokens))
    return found


class _Rejected(Exception):
    pass


def _raising(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` and its subparsers raise their error message instead of exiting."""
    def error(message: str) -> None:
        raise _Rejected(message)

    parser.error = error  # type: ignore[method-assign]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _raising(sub)
    return parser


def parse_errors(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """The error ``parser`` gives ``argv`` (``None``: accepted)."""
    try:
        _raising(parser).parse_args(argv)
    except _Rejected as exc:
        return str(exc)
    except SystemExit as exc:  # e.g. --help
        return f"exit {exc.code}"
    return None


def cli_errors(argv: list[str]) -> str | None:
    """What the CLI's parser (``distgcl.cli.build_parser``) says about ``argv``."""
    return parse_errors(build_parser(), argv)


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser captured")
        self.parser = parser


@lru_cache(maxsize=None)
def script_parser(script: str) -> argparse.ArgumentParser:
    """The script's own argparse parser: import it (no ``__main__`` run) and call its ``main()``
    with ``parse_args`` patched to hand over the parser before anything runs."""
    path = REPO / script
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)

        def capture(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise _Captured(self)

        original = argparse.ArgumentParser.parse_args
        argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
        try:
            module.main()
        except _Captured as got:
            return got.parser
        finally:
            argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    finally:
        sys.path.remove(str(path.parent))
    raise AssertionError(f"{script}: main() never parsed its arguments")


def bench_errors(tokens: list[str]) -> str | None:
    """What ``python bench/X.py ARGS`` gets from the script's own parser (``None``: accepted)."""
    script = tokens[1]
    if not (REPO / script).is_file():
        return f"{script}: no such script"
    err = parse_errors(script_parser(script), tokens[2:])
    return f"{script}: {err}" if err else None


def test_pages_exist() -> None:
    names = {p.name for p in PAGES}
    assert {"methods.md", "evaluation.md", "distributed.md", "scaling.md",
            "benchmarks.md"} <= names
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == []


def test_distgcl_commands_parse() -> None:
    found = commands(("distgcl",))
    assert len(found) >= 8  # the README's quickstart, own graph, workers, GPU lines at least
    bad = [f"{page}: {shlex.join(t)}: {err}" for page, t in found
           if (err := cli_errors(t[1:])) is not None]
    assert bad == []


def test_bench_commands_name_real_scripts_and_flags() -> None:
    found = commands(("python", "bench"))
    assert len(found) >= 10
    bad = [f"{page}: {shlex.join(t)}: {err}" for page, t in found
           if (err := bench_errors(t)) is not None]
    assert bad == []


def test_checks_catch_mutations(tmp_path: Path) -> None:
    """The checks above fail on a broken link, a bogus CLI flag and a bogus bench flag."""
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[a](missing.md) [b](#title) [c](#nope)\n")
    assert broken_links(page) == ["missing.md (no such file)",
                                  "#nope (no heading #nope in page.md)"]
    assert cli_errors(["train", "configs/quickstart.yaml", "--bogus-flag"]) is not None
    assert cli_errors(["train", "configs/quickstart.yaml", "--num-workers", "2"]) is None
    assert bench_errors(["python", "bench/probe.py", "--bogus-flag"]) is not None
    assert bench_errors(["python", "bench/nope.py"]) is not None
    assert bench_errors(["python", "bench/probe.py", "--note", "x"]) is None


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None
                    or importlib.util.find_spec("material") is None,
                    reason="mkdocs / mkdocs-material not installed (pip install -e '.[docs]')")
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    # no -q: mkdocs 1.6 counts strict-mode warnings only at its normal log level
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-f", str(REPO / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "site" / "methods" / "index.html").is_file()
