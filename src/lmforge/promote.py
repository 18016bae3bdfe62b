"""Point a Model Registry alias at the best finetuned classifier: ``python -m lmforge.promote``.

Picks, among the finished finetune runs that registered a model version, the one with the highest
figure its task is judged by (``best_val_f1``, validation macro F1, for a classifier; the lowest
``best_val_loss`` for a text-to-text model), within a sweep (``--sweep latest`` or ``--sweep RUN_ID``
of its parent run) or within the whole finetune experiment, and sets the alias on its version:

    python -m lmforge.promote                       # alias "champion", best of the experiment
    python -m lmforge.promote --sweep latest --alias staging

Then ``mlflow.pyfunc.load_model("models:/lmforge-classifier@champion")`` or
``mlflow models serve -m models:/lmforge-classifier@champion --env-manager local`` use it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from typing import Any

from lmforge.core.config import Config, compose
from lmforge.core.errors import UserError
from lmforge.tracking.runs import OBJECTIVE as METRIC
from lmforge.tracking.runs import ranked, run_objective
from lmforge.tracking.safety import check_store


@dataclass
class Promotion:
    model: str
    alias: str
    version: str
    run_id: str
    score: float
    metric: str = METRIC


def _sweep_parent(client: Any, experiment_id: str, sweep: str) -> str:
    if sweep != "latest":
        return sweep
    parents = client.search_runs(
        [experiment_id],
        filter_string="tags.`lmforge.sweep` = 'parent'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not parents:
        raise UserError("no sweep in the finetune experiment; run one with python -m lmforge.finetune -m")
    return parents[0].info.run_id


def promote(alias: str = "champion", sweep: str | None = None, cfg: Config | None = None) -> Promotion:
    """Set ``alias`` on the model version of the best finetune run (see the module docstring).
    ``cfg`` defaults to the project's composed config (:func:`lmforge.core.config.compose`), so the
    registered model and tracking store are those ``conf/`` sets, as for the finetune stage."""
    from mlflow import MlflowClient

    from lmforge.tracking.runs import tracking_uri

    cfg = cfg or compose()
    name = cfg.logger.registered_model
    if not name:
        raise UserError("logger.registered_model is null: no registered model to promote")
    check_store(tracking_uri(cfg))  # unreachable server or refused credentials: one line
    client = MlflowClient(tracking_uri(cfg))
    experiment = client.get_experiment_by_name(f"{cfg.logger.experiment}-finetune")
    if experiment is None:
        raise UserError(
            f"no experiment {cfg.logger.experiment}-finetune in {tracking_uri(cfg)}; "
            "run the finetune stage first"
        )
    query = "attributes.status = 'FINISHED'"
    if sweep:
        parent = _sweep_parent(client, experiment.experiment_id, sweep)
        query += f" and tags.mlflow.parentRunId = '{parent}'"
    runs = client.search_runs([experiment.experiment_id], filter_string=query, max_results=1000)
    for run in ranked(runs):
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run.info.run_id}'")
        if versions:
            version = max(versions, key=lambda v: int(v.version))
            client.set_registered_model_alias(name, alias, version.version)
            metric = run_objective(run)[0]
            return Promotion(
                name, alias, str(version.version), run.info.run_id, run.data.metrics[metric], metric
            )
    where = f"sweep {sweep}" if sweep else f"experiment {experiment.name}"
    raise UserError(f"no finished finetune run with a registered '{name}' version in {where}")


def has_project() -> bool:
    from lmforge.core.config import find_root

    try:
        find_root()
    except UserError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lmforge.promote",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--alias", default="champion", help="the alias to set (default: champion)")
    parser.add_argument(
        "--sweep", default=None, help="'latest' or a sweep's parent run id: choose among its jobs only"
    )
    parser.add_argument(
        "--model", default=None, help="registered model name (default: the config's logger.registered_model)"
    )
    parser.add_argument(
        "--experiment", default=None, help="experiment prefix (default: the config's logger.experiment)"
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="default: the config's logger.tracking_uri, else $MLFLOW_TRACKING_URI, "
        "else sqlite:///<project>/mlflow.db",
    )
    args = parser.parse_args(argv)
    try:
        # The project's effective config (conf/ composed, as the finetune stage reads it), not
        # the bare schema: a registered model or server set in conf/ is the one promoted in.
        # Outside a project folder (an installed package, flags naming the store) the schema's.
        cfg = compose() if has_project() else Config()
        logger = cfg.logger
        cfg = replace(
            cfg,
            logger=replace(
                logger,
                tracking_uri=args.tracking_uri or logger.tracking_uri,
                experiment=args.experiment or logger.experiment,
                registered_model=args.model or logger.registered_model,
            ),
        )
        done = promote(args.alias, args.sweep, cfg)
    except UserError as exc:
        print(f"lmforge: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"promote: {done.model}@{done.alias} -> version {done.version} (run {done.run_id}, "
        f"{done.metric} {done.score:.4f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
