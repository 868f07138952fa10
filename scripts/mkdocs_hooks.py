"""MkDocs hooks for the docs site (mkdocs.yml `hooks:`).

The pages are read on GitHub too, where a `|` inside code in a table row
must be written `\\|`; Python-Markdown's tables already keep code spans whole
and would show the backslash, so it goes before the page is rendered.
"""

from __future__ import annotations

import re

_CODE = re.compile(r"`[^`\n]*`")


def on_page_markdown(markdown: str, **_: object) -> str:
    """The page with `\\|` unescaped inside the code spans of table rows."""
    return "\n".join(
        _CODE.sub(lambda code: code.group().replace("\\|", "|"), line)
        if line.startswith("|")
        else line
        for line in markdown.split("\n")
    )
