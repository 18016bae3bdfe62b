"""The ``lmforge`` command (also ``python -m lmforge``): one front door to every stage.

``lmforge <stage> key=value ...`` is ``python -m lmforge.<stage> key=value ...`` (sweeps with
``-m``, ``--help``, ``--cfg job``: the same code runs); ``lmforge run`` runs the pipeline
(``dvc repro``, one pipeline id for its runs); ``lmforge ui`` serves the MLflow UI on the stages'
store and prints the link to the finetune runs table. ``lmforge --help`` lists the stages in
``dvc.yaml``'s order. Light on purpose: the help reads source files and imports no stage (nor
torch, Lightning or MLflow).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# Modules of the package that are not commands though they run as __main__.
NOT_COMMANDS = {"__init__", "__main__", "console"}
BUILTINS = {
    "run": "Run the pipeline: dvc repro, its runs grouped under one pipeline id",
    "ui": "Serve the MLflow UI on the stages' store; prints the finetune runs table's link",
}


def command_modules() -> list[str]:
    """The package's runnable modules (``python -m lmforge.<name>``): those with a ``__main__``
    block, read from source, so none is imported."""
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem not in NOT_COMMANDS and 'if __name__ == "__main__":' in path.read_text():
            found.append(path.stem)
    return found


def describe(module: str) -> str:
    """One line from the module's docstring: its first sentence, without the ``Stage N, name:``
    prefix or the ``python -m`` hint."""
    doc = ast.get_docstring(ast.parse((PACKAGE / f"{module}.py").read_text())) or ""
    text = " ".join(doc.split("\n\n")[0].split())
    text = re.sub(r"^Stage( \d+)?, \w+: ", "", text)
    text = re.sub(r":meth:`[^`]*`|:mod:`[^`]*`", "", text).replace("``", "").replace(" ()", "")
    text = re.sub(r": python -m lmforge\.\w+\.?$", "", text).rstrip(".")
    text = text[0].upper() + text[1:] if text else text
    return text if len(text) <= 76 else text[:73].rsplit(" ", 1)[0] + "..."


def pipeline_order(root: Path | None) -> list[str]:
    """The modules ``dvc.yaml``'s stages run, in its order (empty without a dvc.yaml)."""
    if root is None or not (root / "dvc.yaml").is_file():
        return []
    import yaml

    stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages") or {}
    order = []
    for spec in stages.values():
        match = re.search(r"python -m lmforge\.(\w+)", str((spec or {}).get("cmd", "")))
        if match and match.group(1) not in order:
            order.append(match.group(1))
    return order


def project_root() -> Path | None:
    from lmforge.core.config import find_root
    from lmforge.core.errors import UserError

    try:
        return find_root()
    except UserError:
        return None


def print_help(root: Path | None) -> None:
    modules = command_modules()
    pipeline = [m for m in pipeline_order(root) if m in modules]
    others = sorted({*modules, *BUILTINS} - set(pipeline))
    width = max(len(name) for name in [*modules, *BUILTINS]) + 2
    print("usage: lmforge <command> [key=value ...] [group=option ...] [-m] [--help]\n")
    print("One front door to lmforge: `lmforge <stage> ...` is `python -m lmforge.<stage> ...`.\n")
    if pipeline:
        print("pipeline stages, in dvc.yaml's order (lmforge run runs them all):")
        for name in pipeline:
            print(f"  {name:<{width}}{describe(name)}")
        print()
    print("other commands:")
    for name in others:
        print(f"  {name:<{width}}{BUILTINS.get(name) or describe(name)}")
    print("\n`lmforge <command> --help` shows a command's options and config groups.")


def run_pipeline(argv: list[str]) -> int:
    """``dvc repro`` in the project folder, as ``make run``: every stage's run shares one
    ``$LMFORGE_PIPELINE_ID`` (the date and time unless set), and this interpreter's bin folder
    comes first on PATH so the stages run with it."""
    if any(a in ("-h", "--help") for a in argv):
        print("usage: lmforge run [dvc repro options and stages ...]\n")
        print("Runs the pipeline with `dvc repro` in the project folder (what changed since the last")
        print("run); its runs share one MLflow tag lmforge.pipeline_id ($LMFORGE_PIPELINE_ID, else")
        print("the date and time). Arguments go to dvc repro, e.g. `lmforge run finetune` or -f.")
        return 0
    root = project_root()
    if root is None:
        print(
            "lmforge: error: no conf/config.yaml here or above; run lmforge from the project folder",
            file=sys.stderr,
        )
        return 2
    env = dict(os.environ)
    env["LMFORGE_PIPELINE_ID"] = env.get("LMFORGE_PIPELINE_ID") or time.strftime("%Y%m%d-%H%M%S")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    shown = " ".join(["dvc repro", *argv])
    print(f"lmforge run: {shown} (pipeline id {env['LMFORGE_PIPELINE_ID']})")
    try:
        return subprocess.call([sys.executable, "-m", "dvc", "repro", *argv], cwd=root, env=env)
    except KeyboardInterrupt:
        return 130


def ui_parser() -> argparse.ArgumentParser:
    from lmforge.tracking.ui import UI_HOST, UI_PORT

    parser = argparse.ArgumentParser(
        prog="lmforge ui",
        description="Serve the MLflow UI on the store the stages log to (logger.tracking_uri, else "
        "$MLFLOW_TRACKING_URI, else the project's mlflow.db) and print the link to the finetune "
        "runs table. A tracking server's store is its own UI: only the link is printed.",
    )
    parser.add_argument("--host", default=UI_HOST, help=f"address to serve on (default {UI_HOST})")
    parser.add_argument("--port", type=int, default=UI_PORT, help=f"port (default {UI_PORT})")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. logger.experiment=basic")
    return parser


def ui_target(overrides: list[str], host: str, port: int) -> tuple[str, str, str | None]:
    """``(store uri, UI base, finetune runs table link or None)`` for the composed config."""
    from lmforge.core.config import compose
    from lmforge.tracking.runs import tracking_uri
    from lmforge.tracking.ui import finetune_runs_link, ui_base

    cfg = compose(overrides)
    uri = tracking_uri(cfg)
    return uri, ui_base(uri, host, port), finetune_runs_link(uri, cfg.logger.experiment, host, port)


def serve_ui(argv: list[str]) -> int:
    from lmforge.core.errors import UserError
    from lmforge.tracking.safety import redact
    from lmforge.tracking.ui import is_server

    args = ui_parser().parse_args(argv)
    try:
        uri, base, link = ui_target(args.overrides, args.host, args.port)
    except UserError as exc:
        print(f"lmforge: error: {exc}", file=sys.stderr)
        return 2
    print(f"MLflow store  {redact(uri)}")
    print(f"finetune runs {link or f'{base} (no finetune run yet)'}")
    if is_server(uri):
        return 0  # the server is the UI
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    try:
        return subprocess.call([*command, "--host", args.host, "--port", str(args.port)], cwd=project_root())
    except KeyboardInterrupt:
        return 0


def run_stage(name: str, argv: list[str]) -> int:
    """``python -m lmforge.<name> argv``, in this process: the module runs as ``__main__`` (so
    Lightning's DDP ranks and Hydra's job name see ``lmforge.<name>``, as under ``python -m``)."""
    import runpy

    sys.argv = [sys.argv[0], *argv]
    try:
        runpy.run_module(f"lmforge.{name}", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_help(project_root())
        return 0
    name, rest = argv[0], argv[1:]
    if name == "run":
        return run_pipeline(rest)
    if name == "ui":
        return serve_ui(rest)
    if name in command_modules():
        return run_stage(name, rest)
    valid = ", ".join([*command_modules(), *BUILTINS])
    print(f"lmforge: error: unknown command '{name}'; valid commands: {valid}", file=sys.stderr)
    return 2
