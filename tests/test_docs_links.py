"""Every relative link of README.md and docs/ reaches a file of the repository, and every
``#anchor`` a heading of its page.

``mkdocs build --strict`` (``make docs``, ``.ci/run``) checks the links between pages of docs/;
it does not read README.md, whose links GitHub renders against the repository. Anchors are
GitHub's (lower case, punctuation dropped, each space a hyphen): mkdocs.yml makes the site's the
same, so one link works on GitHub and in the site.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
# [text](target) and ![alt](target), the target up to a space (a "title" may follow) or ")".
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked out."""
    lines, fence = [], ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if fence:
            if stripped.startswith(fence):
                fence = ""
            continue
        if stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            continue
        lines.append((number, re.sub(r"(`+).*?\1", "", line)))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading (and the site's: mkdocs.yml's toc slugify)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    # Headings with code spans: slug them from the raw text as well (the spans were blanked above).
    for line in path.read_text().splitlines():
        match = HEADING.match(line)
        if match:
            found.add(slug(match.group(2)))
    return found


def links(path: Path) -> list[tuple[int, str]]:
    return [(n, m.group(1)) for n, line in prose_lines(path.read_text()) for m in LINK.finditer(line)]


def broken(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue  # http(s)://, mailto: ... not a file of the repository
        where = f"{path.relative_to(root)}:{number}: {target}"
        if target.startswith("/"):
            problems.append(f"{where}: an absolute path; link relative to the file")
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not resolved.is_relative_to(root):
            problems.append(f"{where}: leaves the repository")
        elif not resolved.exists():
            problems.append(f"{where}: no such file or folder")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: {resolved.relative_to(root)} has no heading with anchor #{anchor}")
    return problems


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert broken(path) == []


def test_the_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("")
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## SST-2 at 84 %: fused\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](src/a.py) [ok](docs/page.md#sst-2-at-84--fused) [ok](#top) "
        "[bad](src/b.py) [bad](docs/page.md#nope) [bad](#nowhere) [bad](../outside.md)\n"
        "`[not a link](x.md)`\n\n```\n[not a link](y.md)\n```\n# Top\n"
    )
    assert [p.split(": ", 1)[1] for p in broken(readme, root=tmp_path)] == [
        "src/b.py: no such file or folder",
        "docs/page.md#nope: docs/page.md has no heading with anchor #nope",
        "#nowhere: README.md has no heading with anchor #nowhere",
        "../outside.md: leaves the repository",
    ]


def test_slugs_match_github() -> None:
    assert slug("SST-2 at 84 %: the vectors recipe") == "sst-2-at-84--the-vectors-recipe"
    assert slug("Tasks: classification, text-to-text and tagging") == (
        "tasks-classification-text-to-text-and-tagging"
    )
    assert slug("Start from a `model=hf` [checkpoint](x.md)") == "start-from-a-modelhf-checkpoint"


def test_the_site_hook_turns_links_to_repository_files_into_host_links_or_text() -> None:
    """tools/mkdocs_hooks.py: what mkdocs --strict would refuse (a page linking ../src/...)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "tools" / "mkdocs_hooks.py")
    assert spec and spec.loader
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    docs = ROOT / "docs"
    line = (
        "[the schema](../src/lmforge/core/config.py#L1), [`Makefile`](../Makefile), "
        "`[code](../Makefile)`, [a page](tasks.md), [gone](../src/nope.py)"
    )
    assert hooks.rewrite_line(line, docs, docs, ROOT, "") == (
        "the schema (`src/lmforge/core/config.py`), `Makefile`, "
        "`[code](../Makefile)`, [a page](tasks.md), [gone](../src/nope.py)"
    )
    assert hooks.rewrite_line(line, docs, docs, ROOT, "https://example.org/me/lmforge/").startswith(
        "[the schema](https://example.org/me/lmforge/blob/HEAD/src/lmforge/core/config.py#L1), "
        "[`Makefile`](https://example.org/me/lmforge/blob/HEAD/Makefile), "
    )
