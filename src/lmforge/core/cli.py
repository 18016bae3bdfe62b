"""The front door every stage shares: Hydra parsing, config validation, one-line user errors.

A stage module defines ``run(cfg: Config) -> None`` and ends with ``main = stage(run)``. Then
``python -m lmforge.<stage> key=value`` composes ``conf/``; ``--config-dir . --config-name params``
(what ``dvc.yaml`` passes) reads DVC's composed ``params.yaml`` instead; ``-m`` makes a sweep.
Heavy libraries (torch, Lightning, MLflow) are imported inside ``run``, never here, so ``--help`` and
config errors answer fast.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from lmforge.core import interrupts
from lmforge.core.config import (
    Config,
    find_root,
    is_known_key,
    register_schema,
    schema_keys,
    structured,
    validate,
)
from lmforge.core.errors import UserError

log = logging.getLogger("lmforge")

CONFIG_GROUPS = (
    "data",
    "corpus",
    "tokenizer",
    "model",
    "pretrain",
    "finetune",
    "task",
    "generate",
    "optim",
    "trainer",
    "logger",
    "eval",
    "experiment",
    "hparams_search",
    "paths",
    "callbacks",
    "local",
    "debug",
)


def group_options(conf_dir: Path, group: str) -> list[str]:
    """The options of config group ``group``: ``conf/<group>/**/*.yaml`` (``sub/name`` nested)."""
    folder = conf_dir / group
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))


def check_group_choices(argv: list[str], conf_dir: Path) -> None:
    """Reject ``group=option`` naming no option of the group, in one line listing the valid ones
    (Hydra's own message spans 12 to 20 lines and exits 1). Hydra's groups (``hydra/...``) have
    options from plugins too and are left to it, as are functions and interpolations."""
    groups = {p.name for p in conf_dir.iterdir() if p.is_dir() and p.name != "hydra"}
    for arg in argv:
        if arg.startswith(("-", "~")) or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        group = key.lstrip("+").split("@", 1)[0]
        # A list of options ('callbacks=[default,lr_monitor]') is checked option by option.
        if value.startswith("[") and value.endswith("]"):
            value = value[1:-1]
        if group not in groups or any(c in value for c in "(${[]"):
            continue
        options = group_options(conf_dir, group)
        for choice in value.split(","):
            choice = choice.strip()
            if choice in options or choice == "null":
                continue
            hint = ""
            if group == "task":
                from lmforge.core.task_registry import names

                if choice in names():
                    raise UserError(
                        f"task '{choice}' is registered but has no conf/task/{choice}.yaml; "
                        f"choose it with task.name={choice}"
                    )
                others = [n for n in names() if n not in options]
                if others:
                    hint = f" (registered, chosen with task.name=NAME: {', '.join(others)})"
            raise UserError(
                f"unknown {group} '{choice}'; valid choices: {group}={', '.join(options)}{hint} "
                f"({conf_dir / group}/*.yaml)"
            )


def experiment_task(argv: list[str], conf_dir: Path | None) -> str | None:
    """The task the ``experiment=NAME`` given picks (its ``override /task: X`` default, or its
    ``task.name``); ``""`` when it picks none (the default task's keys apply); None when there is
    no single experiment file to read."""
    from omegaconf import OmegaConf

    names = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("experiment=")]
    if conf_dir is None or not names or "," in names[-1]:
        return None
    path = conf_dir / "experiment" / f"{names[-1]}.yaml"
    if not path.is_file():
        return None
    content = OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(content, dict):
        return None
    for entry in content.get("defaults") or []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                if str(key).replace("override", "").strip().lstrip("/") == "task":
                    return str(value)
    task = content.get("task")
    return str(task.get("name") or "") if isinstance(task, dict) else ""


def check_overrides(argv: list[str], conf_dir: Path | None = None) -> None:
    """Reject an override of an unknown key, or of a value its key's type cannot hold, in one
    line and before Hydra starts (its own messages span several lines and arrive seconds later).
    Values that only Hydra understands (sweeps, functions, interpolations) are left to it.
    With ``conf_dir``, a config group's unknown option too (:func:`check_group_choices`).
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if conf_dir is not None:
        check_group_choices(argv, conf_dir)
    # task.* keys are the chosen task's: any registered task's here (an experiment may pick the
    # task), typed by the task=NAME given, else the experiment's, else the default task's
    # (validate checks the rest).
    known = schema_keys(task=None)
    sweep = "-m" in argv or "--multirun" in argv
    chosen = [
        a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith(("task=", "task.name=")) and "," not in a
    ]
    picked = experiment_task(argv, conf_dir)
    typed = structured(chosen[-1] if chosen else picked)
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key = arg.split("=", 1)[0].lstrip("+~")
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        if key in CONFIG_GROUPS or key.split("/")[0] in CONFIG_GROUPS and "." not in key:
            continue
        if not is_known_key(key, known):
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            while parent and parent not in known:
                parent = parent.rsplit(".", 1)[0] if "." in parent else ""
            siblings = sorted(
                k.rsplit(".", 1)[-1] for k in known if (k.rsplit(".", 1)[0] if "." in k else "") == parent
            )
            where = f" under '{parent}'" if parent else " at the top level"
            raise UserError(f"unknown config key '{key}'; valid keys{where}: {', '.join(siblings)}")
        value = arg.split("=", 1)[1]
        if sweep or arg.startswith("~") or any(c in value for c in "(${[,"):
            continue
        node = OmegaConf.select(typed, key, default=None)
        if OmegaConf.is_list(node) and not value.startswith("[") and value != "null":
            raise UserError(f"config key '{key}': takes a list, e.g. {key}=[{value}]")
        if OmegaConf.is_config(node) or "*" in key:
            continue
        if key.startswith("task.") and key.split(".", 1)[1] not in typed.task:
            if not chosen and picked is None and any(a.startswith("experiment=") for a in argv):
                continue  # the experiment may pick the task: validate checks the composed one
            valid = ", ".join(sorted(typed.task))
            raise UserError(
                f"unknown config key '{key}' for task={typed.task.name}; valid keys under 'task': "
                f"{valid} (pick the task that has it: task=NAME)"
            )
        try:
            OmegaConf.update(typed, key, None if value == "null" else value, merge=True)
        except OmegaConfBaseException as exc:
            reason = str(exc).splitlines()[0]
            raise UserError(f"config key '{key}': {reason}") from None


def print_help(module_doc: str | None, prog: str, conf_dir: Path) -> None:
    """Help without composing the config: Hydra's own ``--help`` scans every plugin's config
    group and takes seconds; this reads the folder names and answers at once."""
    groups = []
    # Nested groups too: conf/hydra/launcher/slurm.yaml is the option `hydra/launcher=slurm`.
    for folder in sorted(p for p in conf_dir.rglob("*") if p.is_dir()):
        options = sorted(f.stem for f in folder.glob("*.yaml"))
        if options:
            name = folder.relative_to(conf_dir).as_posix()
            groups.append(f"  {name + ':':<13} {', '.join(options)}")
    print(f"usage: python -m {prog} [--verbose] [-m] [key=value ...] [group=option ...]\n")
    print((module_doc or "").strip() + "\n")
    print("config groups (group=option):")
    print("\n".join(groups))
    print(f"\nDefaults: {conf_dir / 'config.yaml'}. Every key can be overridden, e.g. optim.lr=1e-4.")
    print("Print the composed config with --cfg job; Hydra's own help with --hydra-help.")
    print("-m runs a sweep over comma-separated values (Hydra multirun), one job after another;")
    print("hydra/launcher=joblib runs them in parallel here, submitit_local in subprocesses,")
    print("slurm (or submitit_slurm) as SLURM array jobs; see docs/scaling-out.md.")
    print("--verbose shows the libraries' INFO lines and warnings, and a traceback on error.")


def check_plugins(argv: list[str]) -> None:
    """A search config whose Hydra plugin is not installed: say which extra to install."""
    from importlib.util import find_spec

    if (
        any(arg.startswith("hparams_search=") for arg in argv)
        and find_spec("hydra_plugins.hydra_optuna_sweeper") is None
    ):
        raise UserError("hparams_search needs the Optuna sweeper: pip install -e '.[sweep]'")
    if (
        any(arg.startswith("hydra/launcher=joblib") for arg in argv)
        and find_spec("hydra_plugins.hydra_joblib_launcher") is None
    ):
        raise UserError("hydra/launcher=joblib needs the joblib launcher: pip install -e '.[sweep]'")
    if (
        any(arg.startswith(("hydra/launcher=submitit", "hydra/launcher=slurm")) for arg in argv)
        and find_spec("hydra_plugins.hydra_submitit_launcher") is None
    ):
        raise UserError(
            "hydra/launcher=submitit_* and =slurm need the submitit launcher: pip install -e '.[scale]'"
        )
    if ("-m" in argv or "--multirun" in argv) and any(a in ("--cfg", "-c") for a in argv):
        raise UserError(
            "--cfg prints one job's config and cannot run with -m: drop -m and the "
            "comma-separated sweep values (e.g. python -m lmforge.finetune "
            "hydra/launcher=slurm --cfg hydra)"
        )


def stage_name(run: Callable) -> str:
    """``finetune`` for ``lmforge.finetune.run``, also when that module runs as ``__main__``."""
    module = run.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else Path(sys.argv[0]).stem
    return module.rsplit(".", 1)[-1]


# Set by the front door for the whole process (and the processes it starts): lmforge.lit.trainer
# reads it to leave Lightning's banners and model summary on.
VERBOSE_ENV = "LMFORGE_VERBOSE"
# Loggers whose INFO records are start-up chatter on a normal run (seed set, GPU/TPU available,
# LOCAL_RANK, SQLite migrations, system metrics monitor started/stopped). Lightning resets its
# two package loggers to INFO when imported, after this runs: their modules' own loggers are
# named too (lmforge.lit.trainer quiets the package loggers once Lightning is imported).
CHATTY_LOGGERS = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "lightning.fabric.utilities.seed",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
    "mlflow",
    "alembic",
    "huey",
    "urllib3",
    "git",
    "numexpr",
    "torch",
)
PACKAGE_DIR = str(Path(__file__).resolve().parent)


def quiet_library_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` for a normal run: a warning raised in lmforge's own code is shown,
    one from a library (Lightning's PossibleUserWarnings, MLflow's pyfunc type-hint notice) is not;
    ``--verbose`` shows them all."""
    if filename.startswith(PACKAGE_DIR):
        _show_warning(message, category, filename, lineno, file, line)  # type: ignore[arg-type]


_show_warning = warnings.showwarning


def configure_output(verbose: bool) -> None:
    """The stage prints its own progress and summary; libraries' INFO records and warnings only
    with ``--verbose``. MLflow reads ``MLFLOW_LOGGING_LEVEL`` once, when it is imported."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        return
    os.environ.pop(VERBOSE_ENV, None)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.showwarning = quiet_library_warning


def _fail(message: str, code: int = 2) -> None:
    print(f"lmforge: error: {message}", file=sys.stderr)
    sys.exit(code)


def _interrupted_message(name: str) -> str:
    return interrupts.message(name)


def stage(run: Callable[[Config], object]) -> Callable[[], None]:
    """Wrap a stage's ``run`` into a Hydra command-line entry point."""

    def main() -> None:
        # A signal before the stage's run (while Hydra composes the config, or imports) or
        # after it: one line and exit 128 + signal too.
        try:
            _main()
        except interrupts.Interrupted as exc:
            if os.environ.get(VERBOSE_ENV) == "1":
                raise
            _fail(_interrupted_message(str(exc)), 128 + exc.signum)
        except KeyboardInterrupt:
            if os.environ.get(VERBOSE_ENV) == "1":
                raise
            _fail(_interrupted_message("SIGINT"), 128 + signal.SIGINT)

    def _main() -> None:
        if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
            module = sys.modules[run.__module__]
            spec = getattr(module, "__spec__", None)
            print_help(module.__doc__, spec.name if spec else run.__module__, find_root() / "conf")
            return
        verbose = (
            "--verbose" in sys.argv
            or os.environ.get("HYDRA_FULL_ERROR") == "1"
            or os.environ.get(VERBOSE_ENV) == "1"
        )
        if "--verbose" in sys.argv:
            sys.argv.remove("--verbose")
        configure_output(verbose)
        interrupts.install()  # Ctrl-C and SIGTERM become Interrupted (see lmforge.core.interrupts)
        try:
            conf_dir = find_root() / "conf"
            check_overrides(sys.argv[1:], conf_dir)
            check_plugins(sys.argv[1:])
        except UserError as exc:
            _fail(str(exc))

        import hydra
        from omegaconf import DictConfig

        # Hydra's plugin scan registers it too (src/hydra_plugins/lmforge_schema.py); here as well
        # so a stage composes even where that module is not on the path (an old editable install).
        register_schema()

        @hydra.main(config_path=str(conf_dir), config_name="config", version_base="1.3")
        def _hydra_entry(raw: DictConfig) -> object:
            configure_output(verbose)  # again: Hydra has just configured logging its own way
            try:
                return run(validate(raw))
            except UserError as exc:
                if verbose:
                    raise
                _fail(str(exc))
            except interrupts.Interrupted as exc:
                if verbose:
                    raise
                _fail(_interrupted_message(str(exc)), 128 + exc.signum)
            except KeyboardInterrupt:
                _fail(_interrupted_message("SIGINT"), 128 + signal.SIGINT)
            except SystemExit as exc:
                # Lightning's own SIGTERM handling, when the signal lands after our last check
                # in a step: a SystemExit *without a code*, which would exit 0 as if finished.
                if type(exc).__name__ != "SIGTERMException":
                    raise
                if verbose:
                    raise
                _fail(_interrupted_message("SIGTERM"), 128 + signal.SIGTERM)
            return None

        # Hydra names the job (hydra.job.name) after the module of the task function, which is
        # this one: name it after the stage instead, for its log file and for the sweep
        # callback, which files the sweep's parent run in the stage's MLflow experiment.
        _hydra_entry.__wrapped__.__module__ = f"lmforge.{stage_name(run)}"
        _hydra_entry()

    return main
