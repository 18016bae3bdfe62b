"""The install's promises, checked against each other (quick, no install run).

* The Pythons the project claims (pyproject's requires-python; the template's copier.yml and
  tools/make_project.py; the CI workflow, ruff's and mypy's target, the interpreter running the
  tests) are one set, the set requirements.lock says it was frozen on, and every package the
  lock pins (as installed here) accepts each of them.
* Every third-party package the code imports is declared: in ``dependencies`` when imported at
  a module's top (every stage loads it), in ``dependencies`` or an extra when imported lazily.
* A distribution named in several extras asks for one range.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
LOCK = ROOT / "requirements.lock"


def claimed_pythons() -> set[str]:
    """The minor versions pyproject's requires-python admits (3.0 to 3.39)."""
    spec = SpecifierSet(PROJECT["requires-python"])
    return {f"3.{minor}" for minor in range(40) if spec.contains(Version(f"3.{minor}.0"))}


def requirements(extra: str | None) -> list[Requirement]:
    """``dependencies`` (None) or one extra, with ``lmforge[a,b]`` self-references expanded."""
    raw = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    found = []
    for text in raw:
        req = Requirement(text)
        if canonicalize_name(req.name) == canonicalize_name(PROJECT["name"]):
            for inner in sorted(req.extras):
                found += requirements(inner)
        else:
            found.append(req)
    return found


def declared(*extras: str | None) -> set[str]:
    return {canonicalize_name(req.name) for extra in extras for req in requirements(extra)}


# ---------------------------------------------------------------------------------------------
# Pythons


def test_every_claim_names_the_same_pythons() -> None:
    claimed = claimed_pythons()
    assert claimed and "3.39" not in claimed, (
        f"requires-python {PROJECT['requires-python']} must name the Pythons the lock installs on, "
        "bounded above: a newer Python is a claim nobody has installed on"
    )
    # The template's own files (a generated project has neither): what a new project may pick.
    copier = ROOT / "copier.yml"
    if copier.is_file():
        choices = yaml.safe_load(copier.read_text())["python_version_number"]["choices"]
        assert {str(choice) for choice in choices} == claimed, (
            f"copier.yml offers {sorted(choices)}, requires-python admits {sorted(claimed)}"
        )
    make_project = ROOT / "tools" / "make_project.py"
    if make_project.is_file():
        offered = re.search(r"^PYTHON_VERSIONS = \((.*)\)$", make_project.read_text(), re.M)
        assert offered and set(re.findall(r'"(3\.\d+)"', offered.group(1))) == claimed
    workflow = ROOT / ".github" / "workflows" / "ci.yml"
    if workflow.is_file():
        in_ci = set(re.findall(r'python-version: "(3\.\d+)"', workflow.read_text()))
        assert in_ci and in_ci <= claimed, f"CI runs {sorted(in_ci)}, the project claims {sorted(claimed)}"
    lowest = min(claimed, key=Version)
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py" + lowest.replace(".", "")
    assert PYPROJECT["tool"]["mypy"]["python_version"] == lowest
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert here in claimed, f"the tests run on Python {here}, which the project does not claim"


def test_the_lock_was_frozen_on_the_claimed_pythons() -> None:
    header = re.findall(r"^# Frozen on Python (3\.\d+)", LOCK.read_text(), re.M)
    assert header, f"{LOCK.name} does not say which Python it was frozen on"
    assert set(header) == claimed_pythons(), (
        f"{LOCK.name} is for Python {', '.join(header)}; the project claims {sorted(claimed_pythons())}: "
        "each claimed Python needs a lock (docs/install.md)"
    )


def test_every_pinned_package_accepts_the_claimed_pythons() -> None:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.strip().split("==")
            pins[canonicalize_name(name)] = version
    checked, refused = [], []
    for name, version in sorted(pins.items()):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version.split("+")[0] != version:
            continue
        checked.append(name)
        spec = SpecifierSet(dist.metadata.get("Requires-Python") or "")
        refused += [
            f"{name}=={version} (Requires-Python {spec})"
            for python in claimed_pythons()
            if not spec.contains(Version(f"{python}.0"))
        ]
    if not {"numpy", "pandas", "torch"} <= set(checked):
        pytest.skip("this environment was not installed from requirements.lock")
    assert not refused, f"pinned packages that refuse a claimed Python: {refused}"


# ---------------------------------------------------------------------------------------------
# Imports


def third_party_imports(folder: Path) -> dict[str, tuple[bool, str]]:
    """``{top-level name: (imported at some module's top, where)}`` of the non-stdlib imports of
    every .py under ``folder`` (local modules and the project's own packages left out)."""
    local = {path.stem for path in folder.rglob("*.py")} | {path.name for path in folder.rglob("*")}
    local |= {path.name for path in (ROOT / "src").iterdir()}
    found: dict[str, tuple[bool, str]] = {}

    def visit(node: ast.AST, path: Path, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            for name in names:
                first = name.split(".")[0]
                if first in sys.stdlib_module_names or first in local:
                    continue
                was_top, where = found.get(first, (False, ""))
                if top and not was_top or not where:
                    found[first] = (top or was_top, f"{path.relative_to(ROOT)}:{child.lineno}")
            inner = top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, path, inner)

    for path in sorted(folder.rglob("*.py")):
        visit(ast.parse(path.read_text(encoding="utf-8")), path, True)
    return found


@pytest.mark.parametrize(
    "folder, at_top, anywhere",
    [
        # The package: what every stage loads at start-up must come with `make install`.
        ("src", [None], [None, "hf", "sweep", "scale"]),
        # `make deps`, the project generator, the bootstrap: the base environment runs them.
        ("tools", [None], [None]),
        ("tests", [None, "dev"], [None, "dev"]),
        ("bench", [None, "bench"], [None, "bench"]),
    ],
)
def test_every_import_is_declared(folder: str, at_top: list[str | None], anywhere: list[str | None]) -> None:
    providers = metadata.packages_distributions()
    imports = third_party_imports(ROOT / folder)
    assert imports, f"no third-party import found under {folder}/"
    problems = []
    for name, (top, where) in sorted(imports.items()):
        dists = {canonicalize_name(dist) for dist in providers.get(name, [])}
        if not dists:
            problems.append(f"{name} ({where}): no installed distribution provides it")
            continue
        allowed = declared(*(at_top if top else anywhere))
        if not dists & allowed:
            groups = ", ".join("dependencies" if extra is None else f"[{extra}]" for extra in at_top)
            problems.append(f"{name} ({where}, from {'/'.join(sorted(dists))}) is not declared in {groups}")
    assert not problems, "undeclared imports:\n  " + "\n  ".join(problems)


def test_each_distribution_has_one_range() -> None:
    ranges: dict[str, dict[str, str]] = {}
    for extra in [None, *PROJECT["optional-dependencies"]]:
        for req in requirements(extra):
            ranges.setdefault(canonicalize_name(req.name), {})[extra or "dependencies"] = str(req.specifier)
    differ = {name: where for name, where in ranges.items() if len(set(where.values())) > 1}
    assert not differ, f"one distribution, several ranges: {differ}"
