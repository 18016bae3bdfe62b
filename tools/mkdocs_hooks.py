"""MkDocs hook (mkdocs.yml ``hooks:``): links from a page to a repository file outside docs/.

A page may link to the code or config it describes (``[config.py](../src/lmforge/core/config.py)``),
which GitHub renders as it is. The site cannot serve such a file, and ``mkdocs build --strict``
refuses the link as "not found among documentation files". Before MkDocs checks the links, each
one whose target exists in the repository outside docs/ becomes a link to the file on the
repository's host when mkdocs.yml sets ``repo_url`` (``<repo_url>/blob/HEAD/<path>``), else the
link's text with the path in code. A link to a file that does not exist is left alone, so strict
mode still fails on it (tests/test_docs_links.py checks the same from the repository's side).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

LINK = re.compile(r"(?<!!)\[((?:[^\]\[]|\[[^\]]*\])*)\]\(\s*<?([^)\s>#]+)(#[^)\s>]*)?>?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+).*?\1")


def repository_link(
    match: re.Match[str], page_dir: Path, docs_dir: Path, root: Path, repo_url: str, spans: list[str]
) -> str:
    text, target, anchor = match.group(1), match.group(2), match.group(3) or ""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("/"):
        return match.group(0)
    resolved = (page_dir / target).resolve()
    if resolved.is_relative_to(docs_dir) or not resolved.is_relative_to(root) or not resolved.exists():
        return match.group(0)
    path = resolved.relative_to(root).as_posix()
    if repo_url:
        return f"[{text}]({repo_url.rstrip('/')}/blob/HEAD/{path}{anchor})"
    shown = re.sub(r"\x00(\d+)\x00", lambda m: spans[int(m.group(1))], text).strip("`")
    return f"`{path}`" if shown == path else f"{text} (`{path}`)"


def rewrite_line(line: str, page_dir: Path, docs_dir: Path, root: Path, repo_url: str) -> str:
    """A line's links to repository files rewritten; a link inside a code span is text, so the
    spans are masked first and put back after."""
    spans: list[str] = []

    def mask(span: re.Match[str]) -> str:
        spans.append(span.group(0))
        return f"\x00{len(spans) - 1}\x00"

    line = LINK.sub(
        lambda m: repository_link(m, page_dir, docs_dir, root, repo_url, spans), CODE_SPAN.sub(mask, line)
    )
    return re.sub(r"\x00(\d+)\x00", lambda m: spans[int(m.group(1))], line)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    root = Path(config["config_file_path"]).resolve().parent
    page_dir = Path(page.file.abs_src_path).resolve().parent
    repo_url = config.get("repo_url") or ""
    out, fence = [], ""
    for line in markdown.split("\n"):
        opened = FENCE.match(line)
        if fence:
            fence = "" if opened and opened.group(1) == fence else fence
        elif opened:
            fence = opened.group(1)
        else:
            line = rewrite_line(line, page_dir, docs_dir, root, repo_url)
        out.append(line)
    return "\n".join(out)
