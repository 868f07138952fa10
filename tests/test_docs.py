"""The docs answer what the server answers.

The walk-throughs (README's tour, the REST page's walk-through, the plain SQL
examples) run as written, in bash, against a real server on a fresh database:
each `sh` block followed by a `json` or `text` block must print what that
block shows (times, tokens and keys aside); a `sh` block without one must
print nothing. `CITELINK_UPDATE_DOCS=1 .venv/bin/pytest -n 0 tests/test_docs.py`
writes the real answers into the docs instead of failing.

The committed OpenAPI document (docs/reference/openapi.json) is the one the
app serves, and README stays a front door.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from citelink.api.openapi import build
from citelink.server.app import create_app
from citelink.settings import Settings
from tests.support import ROOT
from tests.support.data import SECRET_KEY
from tests.support.servers import RunningServer

UPDATE = os.environ.get("CITELINK_UPDATE_DOCS") == "1"
OPENAPI = ROOT / "docs" / "reference" / "openapi.json"
DOCUMENTED = "http://127.0.0.1:8000"

# Each run: sections of pages, run in this order in one shell on one fresh
# database, so a later section may use what an earlier one made.
RUNS = {
    "tour": [("README.md", "Five-minute tour")],
    "first-steps": [("docs/getting-started.md", "First steps")],
    "rest-walk-through": [("docs/rest-api.md", "Walk-through")],
    "plain-sql": [
        ("docs/getting-started.md", "First steps"),
        ("docs/delivery.md", "By plain SQL"),
        ("docs/how-it-works.md", "Inbox rows by plain SQL"),
    ],
}
# Commands that run until stopped: the test's own server stands in for
# `serve`, and `listen` is left out (tests/cli covers it).
LONG_RUNNING = re.compile(r"^\s*(\.venv/bin/citelink (serve|listen)\b|python3 -m venv )")
# What differs from run to run.
VOLATILE = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"), "<time>"),
    (re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+"), "<token>"),
    (re.compile(r"\bcl_[A-Za-z0-9]+_[\w-]+"), "<api key>"),
]
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Example:
    """A `sh` block of a page, and the answer block that follows it (if any)."""

    page: Path
    commands: str
    shown: str | None  # None: the block prints nothing
    answer_lines: tuple[int, int] | None  # where `shown` sits in the page (0-based, end exclusive)
    kind: str = "text"
    printed: str = field(default="")


def section(lines: list[str], title: str) -> tuple[int, int]:
    """The lines under the heading `title`, up to the next heading of its level or higher."""
    starts = [n for n, line in enumerate(lines) if re.fullmatch(rf"#+ {re.escape(title)}", line)]
    assert len(starts) == 1, f"no single heading {title!r}"
    start = starts[0]
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    end, fenced = start + 1, False
    while end < len(lines):
        fenced ^= bool(FENCE.match(lines[end]))
        other = re.match(r"^(#+) ", lines[end])
        if not fenced and other and len(other.group(1)) <= level:
            break
        end += 1
    return start + 1, end


def examples(page: str, title: str) -> list[Example]:
    """The `sh` blocks of one section, each with the answer it shows."""
    path = ROOT / page
    lines = path.read_text().splitlines()
    start, end = section(lines, title)
    blocks: list[tuple[str, int, int]] = []  # (kind, first line, end line) of each block body
    i = start
    while i < end:
        opening = FENCE.match(lines[i])
        if opening:
            close = next(j for j in range(i + 1, end) if lines[j].startswith("```"))
            blocks.append((opening.group(1), i + 1, close))
            i = close + 1
        else:
            i += 1
    found = []
    for n, (kind, first, last) in enumerate(blocks):
        if kind != "sh":
            continue
        commands = "\n".join(lines[first:last])
        example = Example(path, commands, None, None)
        if n + 1 < len(blocks) and blocks[n + 1][0] in ("json", "text"):
            answer_kind, a_first, a_last = blocks[n + 1]
            between = lines[last + 1 : a_first - 1]
            if all(not line.strip() for line in between):
                example.shown = "\n".join(lines[a_first:a_last])
                example.answer_lines = (a_first, a_last)
                example.kind = answer_kind
        found.append(example)
    assert found, f"{page}: no sh block under {title!r}"
    return found


def normalised(text: str) -> object:
    """`text` with times, tokens and keys blanked; JSON values parsed (so their
    layout does not matter), other text as its stripped lines."""
    for pattern, stand_in in VOLATILE:
        text = pattern.sub(stand_in, text)
    decoder, values, at = json.JSONDecoder(), [], 0
    text = text.strip()
    try:
        while at < len(text):
            value, at = decoder.raw_decode(text, at)
            values.append(value)
            while at < len(text) and text[at].isspace():
                at += 1
        return values
    except json.JSONDecodeError:
        return [line.rstrip() for line in text.splitlines()]


def layout(printed: str, kind: str) -> str:
    """How an answer is written into the docs: text as printed; JSON values
    one a line, or indented when long."""
    if kind != "json":
        return printed.strip()
    decoder, text, at, out = json.JSONDecoder(), printed.strip(), 0, []
    while at < len(text):
        value, at = decoder.raw_decode(text, at)
        while at < len(text) and text[at].isspace():
            at += 1
        compact = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        out.append(
            compact if len(compact) <= 88 else json.dumps(value, ensure_ascii=False, indent=2)
        )
    return "\n".join(out)


async def run_shell(script: str, server: RunningServer, home: Path, db_url: str) -> str:
    """`script` in bash, in a folder where `.venv` is this virtualenv, with the
    CLI on the test's database; its standard output."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "CITELINK_DATABASE_URL": db_url,
        "CITELINK_SECRET_KEY": SECRET_KEY,
        "CITELINK_DATA_DIR": str(home / ".citelink"),
    }
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script.replace(DOCUMENTED, server.http),
        cwd=home,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode == 0, f"the walk-through failed:\n{err.decode()}\n{out.decode()}"
    return out.decode().replace(server.http, DOCUMENTED)


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="the docs' commands need a virtualenv")
@pytest.mark.skipif(shutil.which("curl") is None, reason="the docs' requests need curl")
@pytest.mark.parametrize("run", list(RUNS))
async def test_walk_throughs_answer_what_the_docs_show(
    run: str, server: RunningServer, db_url: str, tmp_path: Path
):
    found = [e for page, title in RUNS[run] for e in examples(page, title)]
    marker = "@@ end of block @@"
    script = "\n".join(
        "\n".join(line for line in e.commands.splitlines() if not LONG_RUNNING.match(line))
        + f"\nprintf '\\n%s\\n' '{marker}'"
        for e in found
    )
    (tmp_path / ".venv").symlink_to(sys.prefix)
    printed = (await run_shell(script, server, tmp_path, db_url)).split(f"\n{marker}\n")
    assert len(printed) == len(found) + 1
    stale, silent = [], []
    for example, output in zip(found, printed, strict=False):
        example.printed = output.strip()
        if example.shown is None:
            if example.printed:
                silent.append(
                    f"{example.page.name}: this block prints; show what after it:\n"
                    f"{example.commands}\n--- printed:\n{example.printed}"
                )
        elif normalised(example.printed) != normalised(example.shown):
            stale.append(
                f"{example.page.name}:\n{example.commands}\n--- the docs show:\n"
                f"{example.shown}\n--- the server answered:\n{example.printed}"
            )
    if stale and UPDATE:
        rewrite([e for e in found if e.answer_lines is not None])
        stale = []
    assert not stale + silent, (
        "the docs show answers the server no longer gives (CITELINK_UPDATE_DOCS=1 writes "
        "the real ones):\n\n" + "\n\n".join(stale + silent)
    )


def rewrite(found: list[Example]) -> None:
    """Each answer block in its page replaced by what was printed."""
    for page in {e.page for e in found}:
        lines = page.read_text().splitlines()
        # Bottom up, so earlier line numbers stay valid.
        for e in sorted((e for e in found if e.page == page), key=lambda e: -e.answer_lines[0]):
            first, last = e.answer_lines
            lines[first:last] = layout(e.printed, e.kind).splitlines()
        page.write_text("\n".join(lines) + "\n")


def test_the_committed_openapi_document_is_the_apps():
    settings = Settings(database_url="postgresql://unused", secret_key="unused")
    document = (
        orjson.dumps(
            build(create_app(settings).routes, settings), option=orjson.OPT_INDENT_2
        ).decode()
        + "\n"
    )
    if UPDATE:
        OPENAPI.write_text(document)
    assert OPENAPI.read_text() == document, (
        f"{OPENAPI.relative_to(ROOT)} is stale: CITELINK_UPDATE_DOCS=1 "
        ".venv/bin/pytest -n 0 tests/test_docs.py rewrites it"
    )


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    # Its test command is the one CI runs.
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/pip install --quiet -e '.[dev]'" in ci and "\n.venv/bin/pytest\n" in ci
    assert "pip install -e '.[dev]' && .venv/bin/pytest\n" in readme
    # mkdocs checks the site's links; these point into it from outside.
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
