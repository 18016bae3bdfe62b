"""Turn a copy of the lmforge tree into the user's own project (copier's post-copy task).

``copier copy`` copies lmforge's files as they are (``copier.yml``); copier then runs this script
in the new project with the answers, and runs it again on every ``copier update`` (once on a
replay of the old template version, once on the new one, and once in the project itself), so it
must give the same result from the same answers and may find its own earlier output in place.

It renames the package (``src/lmforge`` -> ``src/<package>``, every ``lmforge`` name in the
files copier copied: imports, ``pyproject.toml``, ``dvc.yaml``, the MLflow experiment prefix and
tags, ``LMFORGE_*`` variables), titles the README, and writes the chosen defaults: task and data
source in ``conf/config.yaml``, the tracking store in ``conf/logger/mlflow.yaml``, the Python
version in ``pyproject.toml``, the ``Makefile`` and CI, then ``params.yaml`` to match ``conf/``.

Standard library and PyYAML only (copier brings PyYAML): it runs on copier's interpreter, before
the project has an environment.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

TEMPLATE_PACKAGE = "lmforge"
TEMPLATE_ROOT = Path(__file__).resolve().parents[1]
# Folders of a working tree that copier never copies (copier.yml's _exclude): a template used
# from a plain folder, not a git repository, is listed by walking it without these.
UNLISTED_DIRS = {
    ".git",
    ".venv",
    "__pycache__",
    ".dvc/cache",
    ".dvc/tmp",
    "models",
    "outputs",
    "multirun",
    "site",
}
# The README part that speaks to lmforge's own readers (how to start a project from it): in a
# generated project it becomes the note below.
TEMPLATE_ONLY_START = "<!-- template-only:start -->"
TEMPLATE_ONLY_END = "<!-- template-only:end -->"
GENERATED_NOTE = (
    "## Keeping up with the template\n\n"
    "This project was generated from the lmforge template with copier; the answers are in\n"
    "`.copier-answers.yml`. Commit your work, then `copier update --trust` brings the template's\n"
    "later changes in, keeping your own edits (conflicts, if any, are marked in the files).\n"
)
TASK_GROUPS = {
    # task -> (data group of the built-in corpus, pretraining objective, registered model suffix)
    "classification": ("stdlib", "mlm", "classifier"),
    "text2text": ("docsum", "clm", "text2text"),
    "tagging": (None, "mlm", "tagger"),
}
# The data group a local path starts from: its columns and cleaning suit the task.
LOCAL_DATA_BASE = {"classification": "stdlib", "text2text": "docsum", "tagging": "ud_ewt"}
# The Pythons requirements.lock installs on (pyproject's requires-python; copier.yml offers the same,
# tests/test_install.py checks they agree).
PYTHON_VERSIONS = ("3.11",)


class ProjectError(Exception):
    """A bad answer: the message names it and the fix."""


def check_package_name(name: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise ProjectError(
            f"package name {name!r} is not a lowercase Python identifier; use letters, digits and _"
        )


def rename_text(text: str, package: str) -> str:
    """Every ``lmforge`` / ``LMFORGE`` name (not a part of a longer word) -> the package's."""
    text = re.sub(rf"(?<![A-Za-z0-9]){TEMPLATE_PACKAGE}(?![A-Za-z0-9])", package, text)
    return re.sub(rf"(?<![A-Za-z0-9]){TEMPLATE_PACKAGE.upper()}(?![A-Za-z0-9])", package.upper(), text)


def template_files(template: Path) -> list[Path]:
    """The template's files, relative: tracked files of a git repository, else a walk."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=template, capture_output=True, check=True, text=True
        ).stdout
        return [Path(name) for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for path in sorted(template.rglob("*")):
            relative = path.relative_to(template)
            parents = {p.as_posix() for p in relative.parents}
            if path.is_file() and not (parents | {relative.as_posix()}) & UNLISTED_DIRS:
                files.append(relative)
        return files


def rename_package(dest: Path, package: str, template: Path = TEMPLATE_ROOT) -> list[Path]:
    """Rename the package in every file copier copied from ``template`` into ``dest``; return
    the Python files renamed, relative to ``dest``.

    A file under ``src/lmforge/`` moves to ``src/<package>/``, replacing the file there: on
    ``copier update`` copier has just written the new template's version at the old path, and
    re-applies the user's own edits after this task.
    """
    if package == TEMPLATE_PACKAGE:
        return []
    old_dir = Path("src") / TEMPLATE_PACKAGE
    python_files = []
    for relative in template_files(template):
        source = dest / relative
        if "{{" in relative.as_posix() or not source.is_file() or source.is_symlink():
            continue
        target = dest / rename_path(relative, package)
        data = source.read_bytes()
        try:
            renamed = rename_text(data.decode("utf-8"), package).encode("utf-8")
        except UnicodeDecodeError:
            renamed = data  # binary: moved as it is
        if target != source:
            target.parent.mkdir(parents=True, exist_ok=True)
            source.unlink()
        if not target.exists() or target.read_bytes() != renamed:
            target.write_bytes(renamed)
            shutil.copymode(template / relative, target)
        if target.suffix == ".py":
            python_files.append(target.relative_to(dest))
    if (dest / old_dir).is_dir():
        remove_empty_dirs(dest / old_dir)
    return python_files


def tidy_python(dest: Path, files: list[Path]) -> None:
    """Keep the renamed code lint-clean: another name sorts its imports elsewhere and makes
    lines longer. ruff (when copier's Python or PATH has it) sorts and formats the renamed files;
    a line still over the limit (a long name in a string or comment) raises the E501 limit in
    pyproject.toml to the longest one, the formatter's line length unchanged."""
    if not files:
        return
    names = [str(f) for f in files]
    if importlib.util.find_spec("ruff") is not None:
        ruff = [sys.executable, "-m", "ruff"]
    elif shutil.which("ruff"):
        ruff = ["ruff"]
    else:
        print(
            "make_project: ruff not found; run `pre-commit run --all-files` once to sort the renamed imports"
        )
        ruff = []
    if ruff:
        subprocess.run([*ruff, "check", "--quiet", "--fix", "--select", "I", *names], cwd=dest, check=False)
        subprocess.run([*ruff, "format", "--quiet", *names], cwd=dest, check=True)
    pyproject = dest / "pyproject.toml"
    limit = re.search(r"(?m)^line-length = (\d+)$", pyproject.read_text())
    longest = max(len(line) for name in names for line in (dest / name).read_text().splitlines() or [""])
    if limit and longest > int(limit.group(1)):
        replace_line(
            pyproject,
            r"select = \[.*\]",
            lambda line: (
                f"{line}\n# Lines that name the package grew with its name (tools/make_project.py).\n"
                f"pycodestyle.max-line-length = {longest}"
            ),
        )


def rename_path(relative: Path, package: str) -> Path:
    parts = relative.parts
    if parts[:2] == ("src", TEMPLATE_PACKAGE):
        return Path("src", package, *parts[2:])
    if parts[:2] == ("src", "hydra_plugins") and len(parts) == 3:
        # src/hydra_plugins/lmforge_schema.py: one module per project in the shared namespace.
        return Path("src", "hydra_plugins", rename_text(parts[2], package))
    return relative


def remove_empty_dirs(root: Path) -> None:
    """Remove ``root`` and its subfolders bottom-up where they hold nothing but caches."""
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if folder.name == "__pycache__":
            shutil.rmtree(folder)
        elif not any(folder.iterdir()):
            folder.rmdir()
    if not any(p for p in root.iterdir() if p.name != "__pycache__"):
        shutil.rmtree(root)


def replace_line(path: Path, pattern: str, replacement: str | Callable[[str], str]) -> None:
    """Replace the one line matching ``pattern`` (a regex over the whole line) in ``path``;
    ``replacement`` may be a function of the line."""
    text = path.read_text()
    make = replacement if callable(replacement) else lambda _: replacement
    new, count = re.subn(rf"(?m)^{pattern}$", lambda match: make(match.group(0)), text)
    if count != 1:
        raise ProjectError(f"{path}: expected one line matching {pattern!r}, found {count}")
    path.write_text(new)


def write_readme(dest: Path, project_name: str, description: str) -> None:
    readme = dest / "README.md"
    text = readme.read_text()
    text = re.sub(r"\A# .*\n", lambda _: f"# {project_name}\n", text, count=1)
    if description:
        text = text.replace(f"# {project_name}\n\n", f"# {project_name}\n\n{description}\n\n", 1)
    start, end = text.find(TEMPLATE_ONLY_START), text.find(TEMPLATE_ONLY_END)
    if start != -1 and end != -1:
        text = text[:start] + GENERATED_NOTE + "\n" + text[end + len(TEMPLATE_ONLY_END) :].lstrip("\n")
    readme.write_text(text)


def set_python_version(dest: Path, version: str) -> None:
    if version not in PYTHON_VERSIONS:
        raise ProjectError(f"Python {version} is not offered; use one of {', '.join(PYTHON_VERSIONS)}")
    compact = version.replace(".", "")
    pyproject = dest / "pyproject.toml"
    major, minor = version.split(".")
    below = f"{major}.{int(minor) + 1}"  # one Python, as the template's (the lock is that Python's)
    replace_line(pyproject, r'requires-python = ".*"', f'requires-python = ">={version},<{below}"')
    replace_line(pyproject, r'target-version = "py3\d+"', f'target-version = "py{compact}"')
    replace_line(pyproject, r'python_version = "3\.\d+"', f'python_version = "{version}"')
    replace_line(dest / "Makefile", r"PYTHON \?= python3(\.\d+)?", f"PYTHON ?= python{version}")
    workflow = dest / ".github" / "workflows" / "ci.yml"
    if workflow.is_file():
        workflow.write_text(
            re.sub(r'(python-version: )"3\.\d+"', lambda m: f'{m.group(1)}"{version}"', workflow.read_text())
        )


def set_description(dest: Path, description: str) -> None:
    if description:
        quoted = description.replace("\\", "\\\\").replace('"', '\\"')
        replace_line(dest / "pyproject.toml", r'description = ".*"', f'description = "{quoted}"')


def load_group(conf: Path, group: str, option: str) -> dict:
    """A config group option as Hydra composes it: its own ``defaults`` (same group) first."""
    data = yaml.safe_load((conf / group / f"{option}.yaml").read_text()) or {}
    defaults = data.pop("defaults", [])
    merged: dict = {}
    for entry in defaults:
        merged = deep_merge(merged, data if entry == "_self_" else load_group(conf, group, entry))
    return deep_merge(merged, data) if "_self_" not in defaults else merged


def deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_schema(dest: Path, package: str) -> dict:
    """Every config key's default: the project's schema (``src/<package>/core/config.py``), the one
    home of the defaults that ``conf/`` only overrides. Read in a subprocess with the project's
    ``src/`` on the path (``<package>.core.config`` needs only the standard library to build them)."""
    code = (
        f"import dataclasses, json; from {package}.core.config import Config; "
        "print(json.dumps(dataclasses.asdict(Config())))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=dest,
        env={**os.environ, "PYTHONPATH": str(dest / "src")},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ProjectError(f"reading the config schema of {package}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def changes(base: dict, values: dict) -> dict:
    """What ``values`` changes in ``base``: the keys to write into an option over the schema."""
    changed = {}
    for key, value in values.items():
        default = base.get(key)
        if isinstance(value, dict) and isinstance(default, dict) and default:
            nested = changes(default, value)
            if nested:
                changed[key] = nested
        elif key not in base or value != default or type(value) is not type(default):
            changed[key] = value
    return changed


def write_local_data_group(conf: Path, schema: dict, task: str, data_path: str) -> None:
    """``conf/data/local.yaml``: the task's data group reading ``data_path`` instead, written as
    what it changes in the schema's defaults."""
    group = copy.deepcopy(deep_merge(schema["data"], load_group(conf, "data", LOCAL_DATA_BASE[task])))
    group["source"].update(kind="local", path=data_path)
    if task == "tagging":
        group["source"]["splits"] = {}  # any CoNLL-U files under the path, split by hash
    header = (
        f"# The project's own data (copier answer data_path), read as for task={task}: set\n"
        "# format, text_columns, label_column / target_column / tags_column to match the files\n"
        "# (README, collect). Started from conf/data/"
        f"{LOCAL_DATA_BASE[task]}.yaml; keys not named here keep the schema's\n"
        "# defaults (DataConfig in the package's core/config.py).\n"
    )
    written = yaml.safe_dump(changes(schema["data"], group), sort_keys=False)
    (conf / "data" / "local.yaml").write_text(header + written)


def set_key(path: Path, key: str, value: object, default: object) -> None:
    """Set a top-level ``key`` of an option file to ``value``, or leave it out (the schema's
    default holds) when ``value`` is the default."""
    text = re.sub(rf"(?m)^{re.escape(key)}:.*\n?", "", path.read_text())
    if value != default:
        text = text.rstrip("\n") + f"\n{key}: {yaml_scalar(value)}\n"
    path.write_text(text)


def set_defaults(dest: Path, package: str, task: str, data_path: str, tracking_uri: str) -> None:
    """Write the chosen task, data source and tracking store into conf/ and params.yaml."""
    if task not in TASK_GROUPS:
        raise ProjectError(f"task {task!r} is unknown; use one of {', '.join(TASK_GROUPS)}")
    builtin_data, objective, model_suffix = TASK_GROUPS[task]
    if builtin_data is None and not data_path:
        raise ProjectError(f"task {task} has no built-in corpus; answer data_path with your tagged files")
    conf = dest / "conf"
    schema = load_schema(dest, package)
    data_option = "local" if data_path else builtin_data
    if data_path:
        write_local_data_group(conf, schema, task, data_path)
    config = conf / "config.yaml"
    replace_line(config, r"  - data: \w+", f"  - data: {data_option}")
    replace_line(config, r"  - task: \w+", f"  - task: {task}")
    replace_line(config, r"  - pretrain: \w+", f"  - pretrain: {objective}")
    if data_option != "stdlib":
        # experiment=builtin is the built-in task's recipe (word vectors, no masked LM): another
        # task or data set starts from the groups alone.
        replace_line(config, r"  - experiment: builtin", "  - optional experiment: null")
    logger = conf / "logger" / "mlflow.yaml"
    set_key(logger, "tracking_uri", tracking_uri or None, schema["logger"]["tracking_uri"])
    set_key(logger, "registered_model", f"{package}-{model_suffix}", schema["logger"]["registered_model"])

    # params.yaml is DVC's composition of conf/ (`python -m <package>.params` rewrites it once the
    # project has an environment; its tests check they agree): the changed groups are put in,
    # each composed as Hydra does: the schema's defaults, the option picked, config.yaml's keys.
    own = yaml.safe_load(config.read_text())
    picked = {
        name.split()[-1]: option
        for entry in own.get("defaults", [])
        if isinstance(entry, dict)
        for name, option in entry.items()
    }

    def composed(key: str) -> dict:
        value = schema.get(key, {})
        if picked.get(key):
            value = deep_merge(value, load_group(conf, key, picked[key]))
        return deep_merge(value, own.get(key) or {})

    params_file = dest / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    for group in ("data", "task", "pretrain", "logger"):
        params[group] = composed(group)
    builtin = load_group(conf, "experiment", "builtin")
    if data_option == "stdlib":
        params = deep_merge(params, builtin)
    else:
        # What the preset set goes back to the composition without it (the groups are redone above).
        params.update({key: composed(key) for key in builtin})
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def yaml_scalar(value: str | None) -> str:
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def make_project(
    dest: Path,
    *,
    project_name: str,
    package: str,
    task: str,
    python_version: str,
    description: str = "",
    data_path: str = "",
    tracking_uri: str = "",
    template: Path = TEMPLATE_ROOT,
) -> None:
    check_package_name(package)
    tidy_python(dest, rename_package(dest, package, template))
    write_readme(dest, project_name, description)
    set_description(dest, description)
    set_python_version(dest, python_version)
    set_defaults(dest, package, task, data_path, tracking_uri)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path, help="the new project's folder")
    parser.add_argument("--project-name", required=True)
    parser.add_argument("--package", required=True, help="Python package name (src/<package>)")
    parser.add_argument("--task", required=True, choices=sorted(TASK_GROUPS))
    parser.add_argument("--python-version", required=True, choices=PYTHON_VERSIONS)
    parser.add_argument("--description", default="")
    parser.add_argument("--data-path", default="", help="a local file or folder; empty: the built-in corpus")
    parser.add_argument(
        "--tracking-uri", default="", help="an MLflow server; empty: mlflow.db in the project"
    )
    args = parser.parse_args(argv)
    try:
        make_project(
            args.dest.resolve(),
            project_name=args.project_name,
            package=args.package,
            task=args.task,
            python_version=args.python_version,
            description=args.description,
            data_path=args.data_path,
            tracking_uri=args.tracking_uri,
        )
    except ProjectError as exc:
        print(f"make_project: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
