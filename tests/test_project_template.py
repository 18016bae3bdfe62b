"""A new project from lmforge in one command (``copier copy``), kept updatable (``copier update``).

The quick tests run ``tools/make_project.py`` (copier's post-copy task) on a copy of this tree for
each kind of answer and check ``params.yaml`` against DVC's own composition of the new ``conf/``.
The slow ones run copier itself on a committed copy of this checkout, offline: a project with
the default answers passes its quick tests and ``dvc repro`` on the built-in corpus under its own
name; a later template commit arrives through ``copier update`` next to a local edit.
"""

from __future__ import annotations

import importlib.util
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_cmd

MAKE_PROJECT = ROOT / "tools" / "make_project.py"
spec = importlib.util.spec_from_file_location("make_project", MAKE_PROJECT)
assert spec is not None and spec.loader is not None
make_project = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_project)

PACKAGE = "my_lm_project"  # copier's default module_name for the default project_name
GIT_IDENTITY = ("-c", "user.email=test@lmforge.invalid", "-c", "user.name=lmforge test")


def checkout_files() -> list[str]:
    """This checkout's files as a commit would hold them now: tracked and new, not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def copy_checkout(dest: Path) -> Path:
    for name in checkout_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    return dest


def git(cwd: Path, *args: str) -> str:
    return run_cmd("git", *GIT_IDENTITY, *args, cwd=cwd)


def in_project(project: Path) -> dict[str, str]:
    """Environment for commands in a generated project: its own src/ importable, not ours."""
    return {"PYTHONPATH": str(project / "src")}


# ---------------------------------------------------------------------------------------------
# tools/make_project.py on its own


def test_rename_touches_whole_names_only() -> None:
    text = (
        "from lmforge.core.io import x  # lmforge-finetune, LMFORGE_VERBOSE, lmforge_step, "
        "src/lmforge/, AKIALMFORGETEST0001, mylmforge"
    )
    assert make_project.rename_text(text, "acme") == (
        "from acme.core.io import x  # acme-finetune, ACME_VERBOSE, acme_step, "
        "src/acme/, AKIALMFORGETEST0001, mylmforge"
    )


@pytest.mark.parametrize(
    "answers, expected",
    [
        (
            {"task": "text2text", "python_version": "3.11", "tracking_uri": "http://127.0.0.1:5999"},
            {
                "task.name": "text2text",
                "data.source.target_column": "summary",
                "pretrain.objective": "clm",
                "logger.tracking_uri": "http://127.0.0.1:5999",
                "logger.registered_model": "acme-text2text",
            },
        ),
        (
            {"task": "tagging", "python_version": "3.11", "data_path": "/data/treebank"},
            {
                "task.name": "tagging",
                "data.source.kind": "local",
                "data.source.path": "/data/treebank",
                "data.source.format": "conllu",
                "data.source.splits": {},
                "logger.tracking_uri": None,
            },
        ),
        (
            {"task": "classification", "python_version": "3.11", "data_path": "reviews.csv"},
            {
                "task.name": "classification",
                "data.source.kind": "local",
                "data.source.path": "reviews.csv",
                "data.source.label_column": "label",
                "pretrain.objective": "mlm",
            },
        ),
    ],
    ids=["text2text-server", "tagging-local", "classification-local"],
)
def test_answers_land_in_conf_and_params_match_dvcs_composition(tmp_path: Path, answers, expected) -> None:
    project = copy_checkout(tmp_path / "acme")
    make_project.make_project(project, project_name="Acme LM", package="acme", description="Ours.", **answers)

    assert not (project / "src" / "lmforge").exists() and (project / "src" / "acme" / "finetune.py").is_file()
    assert (project / "README.md").read_text().startswith("# Acme LM\n\nOurs.\n")
    pyproject = (project / "pyproject.toml").read_text()
    assert 'name = "acme"' in pyproject and f'requires-python = ">={answers["python_version"]},<' in pyproject
    assert f"PYTHON ?= python{answers['python_version']}" in (project / "Makefile").read_text()
    # DVC's composition of the new conf/ is byte for byte the params.yaml the task wrote.
    out = run_cmd(sys.executable, "-m", "acme.params", "--check", cwd=project, env=in_project(project))
    assert "in sync" in out
    params = yaml.safe_load((project / "params.yaml").read_text())
    for dotted, value in expected.items():
        found = params
        for key in dotted.split("."):
            found = found[key]
        assert found == value, dotted
    assert params["logger"]["experiment"] == "acme"


def test_bad_answers_are_one_line_errors(tmp_path: Path) -> None:
    project = copy_checkout(tmp_path / "p")
    for args, message in [
        (["--package=9lives", "--task=classification"], "not a lowercase Python identifier"),
        (["--package=acme", "--task=tagging"], "tagging has no built-in corpus; answer data_path"),
    ]:
        done = subprocess.run(
            [
                sys.executable,
                str(MAKE_PROJECT),
                str(project),
                "--project-name=x",
                "--python-version=3.11",
                *args,
            ],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


# ---------------------------------------------------------------------------------------------
# copier copy / copier update, end to end


def template_repo(root: Path) -> Path:
    """A git repository holding this checkout as it is now, committed and tagged v1."""
    template = copy_checkout(root / "lmforge")
    git(template, "init", "-q")
    git(template, "add", "-A")
    git(template, "commit", "-qm", "lmforge as checked out")
    git(template, "tag", "v1")
    return template


def generate(template: Path, project: Path) -> Path:
    run_cmd(
        sys.executable,
        "-m",
        "copier",
        "copy",
        "--trust",
        "--defaults",
        "--quiet",
        str(template),
        str(project),
        cwd=project.parent,
    )
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "generated from lmforge")
    return project


@pytest.mark.slow
@pytest.mark.ci
def test_default_project_passes_its_tests_and_runs_the_pipeline_under_its_own_name(tmp_path: Path) -> None:
    project = generate(template_repo(tmp_path), tmp_path / "my-lm-project")

    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["module_name"] == PACKAGE and answers["_commit"] == "v1"
    assert (project / "README.md").read_text().startswith("# my-lm-project\n")
    assert not (project / "src" / "lmforge").exists() and not (project / "copier.yml").exists()
    named = subprocess.run(
        # A whole name, as the task renames (AKIALMFORGETEST0001, a fake S3 key, is not one).
        [
            "git",
            "grep",
            "-l",
            "-E",
            "(^|[^A-Za-z0-9])(lmforge|LMFORGE)([^A-Za-z0-9]|$)",
            "--",
            ":!README.md",
            ":!.copier-answers.yml",
        ],
        cwd=project,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert named == [], f"files still naming lmforge: {named}"

    # Lint-clean under its own name: imports re-sorted, lines re-wrapped (ruff, as pre-commit runs it).
    run_cmd(sys.executable, "-m", "ruff", "check", "src", "tests", "bench", cwd=project)
    run_cmd(sys.executable, "-m", "ruff", "format", "--check", "src", "tests", "bench", cwd=project)

    # Its own quick tests (what its `make test` runs), with its own package on the path. Its
    # renamed conftest reads MY_LM_PROJECT_REQUIRE_*, so tests needing ../shared/data or a
    # browser skip there; ours ran them already.
    out = run_cmd(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "not slow",
        cwd=project,
        env=in_project(project),
        timeout=3600,
    )
    summary = out.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
    imported = run_cmd(
        sys.executable,
        "-c",
        f"import {PACKAGE}.finetune as m; print(m.__file__)",
        cwd=project,
        env=in_project(project),
    )
    assert str(project / "src" / PACKAGE / "finetune.py") in imported

    # The whole pipeline on the built-in corpus, tiny: dvc repro reads params.yaml. About 100 s
    # of CPU; the timeout only guards a hang (on a crowded machine it took over 20 minutes).
    compose = (
        f"from pathlib import Path; from {PACKAGE}.params import compose; "
        "compose(Path('params.yaml'), Path.cwd(), ['experiment=tiny', 'data.source.max_records=2000'])"
    )
    run_cmd(sys.executable, "-c", compose, cwd=project, env=in_project(project))
    out = run_cmd("dvc", "repro", cwd=project, env=in_project(project), timeout=3600)
    assert f"python -m {PACKAGE}.finetune" in out and f"{PACKAGE} pipeline summary" in out
    assert (project / "metrics" / "eval.json").is_file()
    with sqlite3.connect(project / "mlflow.db") as db:
        experiments = {name for (name,) in db.execute("SELECT name FROM experiments")}
    assert {f"{PACKAGE}-pretrain", f"{PACKAGE}-finetune", f"{PACKAGE}-evaluate"} <= experiments


@pytest.mark.slow
@pytest.mark.ci
def test_copier_update_brings_a_template_change_and_keeps_a_local_edit(tmp_path: Path) -> None:
    template = template_repo(tmp_path)
    project = generate(template, tmp_path / "my-lm-project")
    local_report = project / "src" / PACKAGE / "report.py"
    local_report.write_text("# Our own note, kept across template updates.\n" + local_report.read_text())
    git(project, "commit", "-qam", "a local edit")

    # The template's next release: a new module (importing the package) and a README change.
    (template / "src" / "lmforge" / "later.py").write_text(
        '"""Added by a later template release."""\n\n'
        "from lmforge.core.io import write_json\n\n"
        '__all__ = ["write_json"]\n'
    )
    readme = template / "README.md"
    readme.write_text(
        readme.read_text().replace("\n## The pipeline\n", "\n## The pipeline, step by step\n", 1)
    )
    git(template, "add", "-A")
    git(template, "commit", "-qm", "a later release")
    git(template, "tag", "v2")

    run_cmd(sys.executable, "-m", "copier", "update", "--trust", "--defaults", "--quiet", cwd=project)

    later = project / "src" / PACKAGE / "later.py"
    assert later.read_text().count(f"from {PACKAGE}.core.io import write_json") == 1
    assert not (project / "src" / "lmforge").exists()
    readme_text = (project / "README.md").read_text()
    assert readme_text.startswith("# my-lm-project\n") and "\n## The pipeline, step by step\n" in readme_text
    assert local_report.read_text().startswith("# Our own note, kept across template updates.\n")
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == "v2"
    status = run_cmd("git", "status", "--porcelain", cwd=project)
    assert "UU " not in status and ".rej" not in status, status
    run_cmd(sys.executable, "-c", f"import {PACKAGE}.later", cwd=project, env=in_project(project))


# One home for every default (tests/test_defaults_home.py), in the projects the tool writes.
@pytest.mark.parametrize(
    "answers",
    [{"task": "text2text"}, {"task": "tagging", "data_path": "/data/treebank"}, {"task": "classification"}],
    ids=["text2text", "tagging-local", "classification"],
)
def test_generated_projects_keep_one_home_for_every_default(tmp_path: Path, answers: dict) -> None:
    """tools/make_project.py picks other default options (data=docsum, a written data=local) and
    writes the logger's: what it writes, and what it picks, names only what it changes."""
    from test_defaults_home import duplicated_defaults

    project = copy_checkout(tmp_path / "acme")
    make_project.make_project(project, project_name="Acme", package="acme", python_version="3.11", **answers)
    found = duplicated_defaults(project / "conf", schema_name="acme_schema")
    assert found == []
