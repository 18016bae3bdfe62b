"""Each DVC stage depends on the code it runs: dvc.yaml's ``src/`` deps cover every module of the
package that the stage's module imports (``tools/dvc_deps.py`` walks the imports; ``make deps``
writes them), so an edit anywhere in that code makes ``dvc repro`` rerun the stage.

The quick tests check dvc.yaml against the walk, that the check catches a dep taken out, and the
walk itself on a small package of its own. The slow one edits a module in a scratch copy after
``dvc repro`` and reads ``dvc status``.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cmd, scratch_repo

TOOL = ROOT / "tools" / "dvc_deps.py"
spec = importlib.util.spec_from_file_location("dvc_deps", TOOL)
assert spec is not None and spec.loader is not None
dvc_deps = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = dvc_deps  # its dataclass looks its module up there
spec.loader.exec_module(dvc_deps)

PACKAGE = "lmforge"
DVC_YAML = (ROOT / "dvc.yaml").read_text(encoding="utf-8")
# (stage, a module it imports): the deps the issue found missing.
DRIFTS = [("evaluate", f"{PACKAGE}.models.generation"), ("pretrain", f"{PACKAGE}.data.masking")]


def module_file(module: str) -> str:
    """``module``'s file relative to the repository, as the walk maps it (no import)."""
    return dvc_deps.Package.scan(ROOT, module.split(".")[0]).modules[module]


def without_entry(text: str, stage: str, entry: str) -> str:
    """``text`` (a dvc.yaml) with ``entry`` taken out of ``stage``'s deps, nothing else changed."""
    lines = text.splitlines(keepends=True)
    marks = dvc_deps.deps_lines(lines)
    items = [i for i, mark in enumerate(marks) if mark == (stage, "item")]
    (line,) = [i for i in items if dvc_deps.item_entry(lines[i])[0] == entry]
    return "".join(lines[:line] + lines[line + 1 :])


def test_every_stage_depends_on_the_modules_it_imports() -> None:
    gaps = dvc_deps.uncovered(DVC_YAML)
    listing = "\n".join(f"  {stage}: {', '.join(files)}" for stage, files in gaps.items())
    assert not gaps, f"dvc.yaml: stages import modules their deps do not list:\n{listing}\n{dvc_deps.FIX}."
    listed = [e for entries in dvc_deps.listed_deps(DVC_YAML).values() for e in entries]
    stale = sorted({e for e in listed if not (ROOT / e).exists()})
    assert not stale, f"dvc.yaml: code deps that do not exist (dvc repro fails): {stale}; {dvc_deps.FIX}."


@pytest.mark.parametrize(("stage", "module"), DRIFTS)
def test_the_check_reports_a_dep_taken_out(stage: str, module: str, tmp_path: Path, capsys) -> None:
    path = module_file(module)
    (entry,) = [e for e in dvc_deps.listed_deps(DVC_YAML)[stage] if dvc_deps.covers(e, path)]
    broken = without_entry(DVC_YAML, stage, entry)

    assert path in dvc_deps.uncovered(broken)[stage]
    assert f"{stage}: add {entry}" in dvc_deps.differences(broken)
    # --write puts it back where it was, and touches nothing else.
    assert dvc_deps.rewrite(broken) == dvc_deps.rewrite(DVC_YAML)

    # The command line, on a dvc.yaml beside (a link to) this checkout's src/.
    (tmp_path / "src").symlink_to(ROOT / "src")
    (tmp_path / "dvc.yaml").write_text(broken, encoding="utf-8")
    assert dvc_deps.main(["--check", "--dvc-yaml", str(tmp_path / "dvc.yaml")]) == 1
    out = capsys.readouterr().out
    assert f"{stage}: add {entry}" in out and "make deps" in out
    assert dvc_deps.main(["--write", "--dvc-yaml", str(tmp_path / "dvc.yaml")]) == 0
    assert dvc_deps.main(["--check", "--dvc-yaml", str(tmp_path / "dvc.yaml")]) == 0


def test_the_walk_follows_lazy_relative_and_by_name_imports(tmp_path: Path) -> None:
    files = {
        "__init__.py": "",
        "stage.py": "import os\n\n\ndef run():\n    from .helpers import util\n    import pkg.tasks\n",
        "helpers/__init__.py": "",
        "helpers/util.py": "from ..base import thing\n",
        "helpers/unused.py": "",
        "base.py": "thing = 1\n",
        "other.py": "",  # imported by nothing
        "tasks/__init__.py": "def get_task(name):\n    ...\n",  # tasks: loaded by name
        "tasks/one/__init__.py": "from pkg import extra\n",
        "tasks/one/model.py": "",
        "extra.py": "",
    }
    for name, text in files.items():
        (tmp_path / "src" / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / "pkg" / name).write_text(text)
    dvc_yaml = (
        "# the pipeline\n"
        "stages:\n"
        "  run:\n"
        "    cmd: python -m pkg.stage --flag\n"
        "    deps:\n"
        "      - data/in  # its input\n"
        "      - src/pkg/stage.py  # the stage\n"
        "      - src/pkg/other.py\n"
        "    outs:\n"
        "      - out\n"
        "  shell:\n"
        "    cmd: echo hi\n"
        "    deps:\n"
        "      - src/pkg/other.py\n"
        "  elsewhere:\n"
        "    cmd: python -m pip --version\n"
        "    deps:\n"
        "      - src/pkg/other.py\n"
    )
    rewritten = dvc_deps.rewrite(dvc_yaml, tmp_path)
    assert rewritten == (
        "# the pipeline\n"
        "stages:\n"
        "  run:\n"
        "    cmd: python -m pkg.stage --flag\n"
        "    deps:\n"
        "      - data/in  # its input\n"
        "      - src/pkg/stage.py  # the stage\n"
        "      - src/pkg/__init__.py\n"
        "      - src/pkg/base.py\n"
        "      - src/pkg/extra.py\n"
        "      - src/pkg/helpers/__init__.py\n"
        "      - src/pkg/helpers/util.py\n"
        "      - src/pkg/tasks\n"
        "    outs:\n"
        "      - out\n"
        "  shell:\n"
        "    cmd: echo hi\n"
        "    deps:\n"
        "      - src/pkg/other.py\n"
        "  elsewhere:\n"
        "    cmd: python -m pip --version\n"
        "    deps:\n"
        "      - src/pkg/other.py\n"
    )
    assert dvc_deps.uncovered(rewritten, tmp_path) == {}
    assert dvc_deps.differences(dvc_yaml, tmp_path) == [
        f"run: add {entry}"
        for entry in ("src/pkg/__init__.py", "src/pkg/base.py", "src/pkg/extra.py")
        + ("src/pkg/helpers/__init__.py", "src/pkg/helpers/util.py", "src/pkg/tasks")
    ] + ["run: drop src/pkg/other.py"]


# ---------------------------------------------------------------------------------------------
# DVC itself: after `dvc repro`, an edit to a module a stage imports shows in `dvc status`.


def changed_stages(status: str) -> set[str]:
    """The stages ``dvc status`` lists (``name:`` at the start of a line)."""
    return set(re.findall(r"^([\w-]+):", status, flags=re.MULTILINE))


@pytest.mark.slow
@pytest.mark.ci
def test_an_edit_to_an_imported_module_shows_in_dvc_status(tmp_path: Path) -> None:
    started = time.monotonic()
    repo = tmp_path / "repo"
    repo.mkdir()
    scratch_repo(repo, ["experiment=tiny", "data.source.max_records=2000"])
    run_cmd("dvc", "repro", cwd=repo, timeout=1800)
    assert "up to date" in run_cmd("dvc", "status", cwd=repo)
    for stage, module in DRIFTS:
        path = repo / module_file(module)
        original = path.read_bytes()
        with path.open("a", encoding="utf-8") as handle:
            handle.write("# an edit DVC must notice\n")
        try:
            changed = changed_stages(run_cmd("dvc", "status", cwd=repo))
        finally:
            path.write_bytes(original)
        assert stage in changed, f"editing {module_file(module)} left {stage} up to date: {changed}"
    assert "up to date" in run_cmd("dvc", "status", cwd=repo)
    print(f"repro and status checks: {time.monotonic() - started:.0f} s")
