"""Derive each DVC stage's code dependencies from what the stage imports, so they cannot drift.

For every stage in ``dvc.yaml`` whose ``cmd`` is ``python -m <package>.<module>``, the code the
stage runs is the closure of the package's modules that ``<module>`` imports: a static walk of
every ``import`` statement (those inside functions too: the stages import heavy libraries, and
often their own helpers, lazily), ``from <package>.x import y`` counting ``y`` when it is a
module, relative imports resolved, and each module's parent packages (their ``__init__.py`` runs
first). Packages whose modules are loaded by name at run time, not imported (``LOADED_BY_NAME``:
the tasks, which ``core.task_registry`` finds by name), come in whole once the closure reaches
the module that loads them or the package itself.

Each stage's deps list the closure's files, a folder standing for its files when every module
under it is in the closure (a module added there later is then covered without an edit):

    python tools/dvc_deps.py --check   # exit 1 and print what differs from dvc.yaml
    python tools/dvc_deps.py --write   # rewrite the stages' src/ deps in dvc.yaml (`make deps`)

``--write`` replaces only the ``src/`` entries of each stage's ``deps``; the file's comments,
data deps and other entries stay as they are. Standard library and PyYAML only: no lmforge
import, so it runs before the project's environment works and never loads torch.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = "src"  # the package's folder, as pyproject.toml's [tool.setuptools.packages.find] has it
CODE_PREFIX = f"{SRC}/"  # deps entries that this tool owns
STAGE_CMD = re.compile(r"^\s*python3?\s+-m\s+([A-Za-z_]\w*)((?:\.[A-Za-z_]\w*)+)(?:\s|$)")
# Subpackages (relative to the package) whose modules are looked up by name at run time, never
# imported by the code that uses them, each with the module that loads them: a stage that
# imports the loader or the subpackage depends on all of the subpackage.
LOADED_BY_NAME = {"tasks": "core.task_registry"}
FIX = "run `make deps` (python tools/dvc_deps.py --write) and commit dvc.yaml"


@dataclass
class Package:
    """A package's modules under ``root``: dotted name -> path relative to ``root``."""

    root: Path
    modules: dict[str, str]
    parsed: dict[str, set[str]] = field(default_factory=dict, repr=False)

    @classmethod
    def scan(cls, root: Path, name: str) -> Package:
        modules = {}
        for path in sorted((root / SRC / name).rglob("*.py")):
            relative = path.relative_to(root / SRC)
            if "__pycache__" in relative.parts:
                continue
            parts = relative.with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path.relative_to(root).as_posix()
        return cls(root, modules)

    def is_package(self, module: str) -> bool:
        return self.modules[module].endswith("/__init__.py")

    def imports(self, module: str) -> set[str]:
        """The package's modules that ``module``'s import statements name, wherever they are."""
        if module in self.parsed:
            return self.parsed[module]
        tree = ast.parse((self.root / self.modules[module]).read_text(encoding="utf-8"), self.modules[module])
        named: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                named.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = self.resolve(module, node.level, node.module)
                if base is None:
                    continue
                named.add(base)
                named.update(f"{base}.{alias.name}" for alias in node.names)
        found = set()
        for name in named:
            for prefix in parents_and_self(name):
                if prefix in self.modules:
                    found.add(prefix)
        self.parsed[module] = found
        return found

    def resolve(self, module: str, level: int, name: str | None) -> str | None:
        """The absolute name of ``from <level dots><name> import ...`` in ``module``."""
        if level == 0:
            return name
        parts = module.split(".") if self.is_package(module) else module.split(".")[:-1]
        if level - 1 > len(parts) - 1:
            return None  # beyond the top-level package: Python raises ImportError
        parts = parts[: len(parts) - (level - 1)]
        return ".".join([*parts, name] if name else parts)

    def closure(self, module: str) -> set[str]:
        """``module`` and every module of the package that running it imports."""
        top = module.split(".")[0]
        by_name = {
            trigger: f"{top}.{sub}"
            for sub, loader in LOADED_BY_NAME.items()
            for trigger in (f"{top}.{sub}", f"{top}.{loader}")
        }
        seen: set[str] = set()
        todo = [p for p in parents_and_self(module) if p in self.modules]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            todo.extend(self.imports(current) - seen)
            todo.extend(p for p in parents_and_self(current)[:-1] if p in self.modules)
            if current in by_name:
                loaded = by_name[current]
                todo.extend(m for m in self.modules if m.startswith(f"{loaded}.") and m not in seen)
                todo.append(loaded)
        return seen

    def deps(self, module: str) -> list[str]:
        """``module``'s closure as dvc.yaml deps: its own file first, then the others sorted,
        a folder in place of its files when every module under the folder is in the closure."""
        files = {self.modules[m] for m in self.closure(module)}
        every = set(self.modules.values())
        entries = set(files)
        for path in sorted(files):
            for folder in parent_folders(path):
                under = {f for f in every if f.startswith(f"{folder}/")}
                if under <= files:
                    entries -= under
                    entries.add(folder)
        # A folder inside a folder already listed: the outer one covers it.
        entries = {e for e in entries if not any(covers(o, e) and o != e for o in entries)}
        own = self.modules[module]
        return ([own] if own in entries else []) + sorted(entries - {own})


def parents_and_self(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def parent_folders(path: str) -> list[str]:
    """``src/a/b/c.py`` -> ``src/a``, ``src/a/b`` (folders under ``src/``)."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(2, len(parts))]


def covers(entry: str, path: str) -> bool:
    """A deps entry covers a file (or folder) when it is the same path or a folder above it."""
    return path == entry or path.startswith(entry.rstrip("/") + "/")


def dep_name(entry: object) -> str:
    """A deps entry's path: a string, or the key of a one-key mapping (``- path: {...}``)."""
    return next(iter(entry)) if isinstance(entry, dict) else str(entry)


def stage_modules(dvc_yaml: dict) -> dict[str, str]:
    """Stage name -> the module its ``python -m`` command runs, for stages that run one."""
    found = {}
    for name, stage in (dvc_yaml.get("stages") or {}).items():
        match = STAGE_CMD.match(str(stage.get("cmd", ""))) if isinstance(stage, dict) else None
        if match:
            found[name] = match.group(1) + match.group(2)
    return found


def expected_deps(text: str, root: Path = ROOT) -> dict[str, list[str]]:
    """Stage name -> the code deps it should list, for the stages of ``text`` (a dvc.yaml)."""
    modules = stage_modules(yaml.safe_load(text))
    packages = {m.split(".")[0] for m in modules.values()}
    scanned = {name: Package.scan(root, name) for name in packages}
    found = {}
    for stage, module in modules.items():
        package = scanned[module.split(".")[0]]
        if not package.modules:
            continue  # `python -m` of a module from elsewhere (pip, dvc): not this project's code
        if module not in package.modules:
            raise SystemExit(f"dvc.yaml: stage {stage!r} runs {module}, which is not under {SRC}/")
        found[stage] = package.deps(module)
    return found


def listed_deps(text: str) -> dict[str, list[str]]:
    """Stage name -> the ``src/`` entries of its deps in ``text``, for stages that run a module."""
    data = yaml.safe_load(text)
    stages = data.get("stages") or {}
    return {
        name: [dep_name(d) for d in stages[name].get("deps") or [] if dep_name(d).startswith(CODE_PREFIX)]
        for name in stage_modules(data)
    }


def uncovered(text: str, root: Path = ROOT) -> dict[str, list[str]]:
    """Stage name -> the files of modules it imports that none of its deps in ``text`` covers."""
    data = yaml.safe_load(text)
    stages = data.get("stages") or {}
    missing = {}
    scanned: dict[str, Package] = {}
    for stage, module in stage_modules(data).items():
        top = module.split(".")[0]
        if top not in scanned:
            scanned[top] = Package.scan(root, top)
        package = scanned[top]
        if not package.modules:
            continue
        if module not in package.modules:
            missing[stage] = [module]
            continue
        entries = [dep_name(d) for d in stages[stage].get("deps") or []]
        files = sorted(package.modules[m] for m in package.closure(module))
        gaps = [f for f in files if not any(covers(e, f) for e in entries)]
        if gaps:
            missing[stage] = gaps
    return missing


def differences(text: str, root: Path = ROOT) -> list[str]:
    """One line per code dep that ``text`` (a dvc.yaml) misses or lists in excess."""
    expected, listed = expected_deps(text, root), listed_deps(text)
    lines = []
    for stage, wanted in expected.items():
        have = listed.get(stage, [])
        lines += [f"{stage}: add {entry}" for entry in wanted if entry not in have]
        lines += [f"{stage}: drop {entry}" for entry in have if entry not in wanted]
    return lines


def rewrite(text: str, root: Path = ROOT) -> str:
    """``text`` (a dvc.yaml) with each python -m stage's ``src/`` deps replaced by what it imports.

    Line by line, so comments and layout stay: the new entries take the place of the first
    ``src/`` entry (or go first in the list), keeping the trailing comment of an entry that stays.
    """
    expected = expected_deps(text, root)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    marks = deps_lines(lines)
    code_lines: set[int] = set()
    inserts: dict[int, list[str]] = {}
    for stage, entries in expected.items():
        keys = [i for i, mark in enumerate(marks) if mark == (stage, "key")]
        if not keys:
            raise SystemExit(f"dvc.yaml: stage {stage!r} has no `deps:` list to write its code deps into")
        items = [i for i, mark in enumerate(marks) if mark == (stage, "item")]
        code = [i for i in items if item_entry(lines[i])[0].startswith(CODE_PREFIX)]
        comments = dict(item_entry(lines[i]) for i in code)
        if any(entry.endswith(":") for entry in comments):
            raise SystemExit(f"dvc.yaml: stage {stage!r} has a code dep with options; edit it by hand")
        indent = " " * (indent_of(lines[items[0]]) if items else indent_of(lines[keys[0]]) + 2)
        at = code[0] if code else items[0] if items else keys[0] + 1
        inserts[at] = [f"{indent}- {entry}{comments.get(entry, '')}\n" for entry in entries]
        code_lines.update(code)
    out: list[str] = []
    for i in range(len(lines) + 1):
        out += inserts.get(i, [])
        if i < len(lines) and i not in code_lines:
            out.append(lines[i])
    result = "".join(out)
    check_only_code_changed(text, result, expected)
    return result


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


ITEM = re.compile(r"^-\s+(['\"]?)(?P<entry>[^'\"#\s]+)\1(?P<comment>\s+#.*)?$")


def item_entry(line: str) -> tuple[str, str]:
    """A ``- path  # comment`` line's path and its comment (with the spaces before it)."""
    match = ITEM.match(line.strip())
    return (match["entry"], match["comment"] or "") if match else (line.strip()[1:].strip(), "")


def deps_lines(lines: list[str]) -> list[tuple[str | None, str]]:
    """Each line's stage (under the top-level ``stages:``) and role: ``key`` for the stage's
    ``deps:`` line, ``item`` for an entry of that list, ``""`` for any other line."""
    marks: list[tuple[str | None, str]] = []
    in_stages = False
    stage: str | None = None
    stage_indent = key_indent = item_indent = -1
    key = ""
    for line in lines:
        stripped, indent, role = line.strip(), indent_of(line), ""
        dash = stripped.startswith("-")
        name = stripped.split(":", 1)[0].strip("'\"")
        if not stripped or stripped.startswith("#"):
            pass
        elif indent == 0:
            in_stages, stage, stage_indent = name == "stages", None, -1
        elif in_stages:
            if stage_indent < 0:
                stage_indent = indent
            if indent == stage_indent and not dash:
                stage, key, key_indent, item_indent = name, "", -1, -1
            elif stage is not None and indent > stage_indent:
                if not dash and (key_indent < 0 or indent == key_indent):
                    key_indent, key = indent, name
                    role = "key" if key == "deps" else ""
                elif key == "deps" and dash:
                    item_indent = indent if item_indent < 0 else item_indent
                    role = "item" if indent == item_indent else ""
        marks.append((stage, role))
    return marks


def check_only_code_changed(before: str, after: str, expected: dict[str, list[str]]) -> None:
    """Guard the line-based rewrite: parsed, ``after`` must be ``before`` with each stage's
    ``src/`` deps replaced by ``expected``, the other deps in their order, nothing else changed."""
    old, new = yaml.safe_load(before), yaml.safe_load(after)
    for name, entries in expected.items():
        old_deps = old["stages"][name].pop("deps", None) or []
        new_deps = new["stages"][name].pop("deps", None) or []
        others = [d for d in old_deps if not dep_name(d).startswith(CODE_PREFIX)]
        code = [dep_name(d) for d in new_deps if dep_name(d).startswith(CODE_PREFIX)]
        if code != entries or [d for d in new_deps if not dep_name(d).startswith(CODE_PREFIX)] != others:
            old = None
    if old != new:
        raise SystemExit("dvc_deps: the rewrite would change more than the code deps; dvc.yaml kept as it is")


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml's code deps differ")
    action.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps")
    parser.add_argument("--dvc-yaml", type=Path, default=ROOT / "dvc.yaml")
    args = parser.parse_args(None if argv is None else list(argv))
    root = args.dvc_yaml.resolve().parent
    text = args.dvc_yaml.read_text(encoding="utf-8")
    if args.check:
        lines = differences(text, root)
        for line in lines:
            print(f"{args.dvc_yaml.name}: {line}")
        if lines:
            print(f"The stages' code deps differ from what they import: {FIX}.")
        return 1 if lines else 0
    updated = rewrite(text, root)
    if updated != text:
        args.dvc_yaml.write_text(updated, encoding="utf-8")
        print(f"{args.dvc_yaml.name}: code deps rewritten from the stages' imports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
