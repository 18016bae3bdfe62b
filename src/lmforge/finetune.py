"""Stage 5, finetune: train the task's head (and the encoder) on the labelled train split.

The task (``task.name``; :mod:`lmforge.tasks`) decides how records
become examples, the head and loss, and the validation figure that picks the best checkpoint and
stops early; this stage wires them to Lightning, checkpoints and MLflow. Starts from
``models/pretrained/`` unless pretraining was disabled; with ``model=hf``, from the checkpoint
``model.name_or_path``. Writes ``models/finetuned/`` (``model.pt``, or with ``model=hf`` the
``save_pretrained`` folder ``hf/``; ``config.json`` with the task and what it needs,
``tokenizer.json``, ``meta.json``), ``metrics/finetune.json``, the task's validation reports
(``metrics/val_per_class.json``...) and ``plots/finetune_curves.csv``: all written aside and put
in place together at the end, the files of another task's run removed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import replace
from pathlib import Path

from lmforge.core.cli import stage
from lmforge.core.config import Config
from lmforge.core.io import atomic_dir, atomic_file, write_json
from lmforge.data.pairing import KEY as TOKENIZER_KEY
from lmforge.data.pairing import check_tokenizer_file
from lmforge.lit.workspace import check_model_shards, model_config, shard_meta, upstream_meta

CURVES = "finetune_curves.csv"  # under paths.plots (dvc.yaml's finetune plot)


def run(cfg: Config) -> float:
    """Finetune; return the task's best validation figure (the objective of sweeps)."""
    from lmforge.core.task_registry import get_task
    from lmforge.lit.workspace import check_hf_shards, hf_checkpoint
    from lmforge.tracking.runs import job_outputs

    cfg = job_outputs(cfg, "finetune")  # a sweep job writes into its own folder
    task = get_task(cfg.task.name)
    meta = shard_meta(cfg)
    check_hf_shards(cfg, meta)
    pretrained = Path(cfg.paths.pretrained)
    upstream = upstream_meta(pretrained, "pretrain")
    if upstream.get("enabled"):  # the encoder's embeddings are those of the shards' tokenizer
        check_model_shards(pretrained, meta, cfg, "pretrain")
    data = task.data(cfg, meta)

    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from lmforge.lit.fit import fit_run, loaders, seed
    from lmforge.tracking.registry import log_checkpoints
    from lmforge.tracking.runs import pipeline_id

    seed(cfg)
    f = cfg.finetune
    train_loader, val_loader = loaders(
        cfg,
        data.train,
        data.val,
        batch_size=f.batch_size,
        val_batch_size=cfg.eval.batch_size,
        collate=data.collate,
        lengths=data.train_lengths if f.group_by_length else None,
    )
    model_cfg = model_config(cfg, meta["vocab_size"])
    epochs = f.epochs(len(data.train))  # max_epochs, within finetune.budget_examples
    if epochs < f.max_epochs:
        print(
            f"finetune: {epochs} epoch(s) of {len(data.train)} train examples "
            f"(finetune.budget_examples={f.budget_examples}; max_epochs={f.max_epochs})"
        )
    total_steps = epochs * math.ceil(len(data.train) / f.batch_size)
    module = task.module(cfg, model_cfg, meta, total_steps)
    task.before_fit(module, data, cfg, meta)
    if cfg.trainer.compile:
        module.model.compile()
    tags = {
        "lmforge.pretrain_run_id": upstream.get("mlflow_run_id", "none"),
        "lmforge.pretrained": str(upstream.get("enabled", False)).lower(),
        "lmforge.task": task.name,
        "lmforge.objective": task.objective,
        "lmforge.objective_mode": task.mode,
    }
    if upstream.get("enabled"):
        # model=hf: task.module already started from the continued-pretrained folder.
        tags["lmforge.pretrain_checkpoint"] = (
            str(hf_checkpoint(cfg)[0].name_or_path)
            if cfg.model.is_hf
            else task.load_pretrained(module, pretrained)
        )

    with fit_run(cfg, "finetune", pipeline_id(pretrained / "meta.json"), tags) as training:
        import mlflow

        if training.new_run:  # a resumed run has them (params cannot change)
            mlflow.log_params(
                {"data.train_examples": len(data.train), "data.val_examples": len(data.val), **data.params}
            )
            mlflow.log_metrics({f"data/truncated_{k}": v for k, v in data.truncated.items()})
        checkpoints = ModelCheckpoint(
            dirpath=training.plan.folder,
            monitor=task.monitor,
            mode=task.mode,
            save_top_k=1,
            save_last=True,
            filename="best",
        )
        stopper = EarlyStopping(monitor=task.monitor, mode=task.mode, patience=f.patience)
        trainer = training.fit(
            module,
            train_loader,
            val_loader,
            # Written beside the checkpoints while training; put in place with the model.
            curve=training.plan.folder / "curves" / CURVES,
            per_step_curve=False,
            lr_key="optim.lr",
            callbacks=[checkpoints, stopper],
            ema_decay=f.ema_decay,
            max_epochs=epochs,
            val_check_interval=f.val_check_interval,
            gradient_clip_val=cfg.optim.grad_clip or None,
        )
        score = (
            float(checkpoints.best_model_score)
            if checkpoints.best_model_score is not None
            else float(trainer.callback_metrics[task.monitor])
        )
        if not training.leader:
            return score
        if checkpoints.best_model_path:
            best = torch.load(checkpoints.best_model_path, map_location="cpu", weights_only=True)
            module.load_state_dict(best["state_dict"])
        settled = task.before_save(module, val_loader, cfg, meta)
        metrics = {
            task.objective: score,
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            "loader_wait_fraction": training.loader_wait.fraction,
            **settled,
        }
        # Every output is written aside and put in place together once all are written: an
        # interrupted run leaves the previous run's model, metrics and curve, never a mix.
        for stale in Path(cfg.paths.metrics).glob(".finetune.tmp-*"):  # of a killed run
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(cfg.paths.metrics) / f".finetune.tmp-{os.getpid()}"
        staging.mkdir(parents=True)
        try:
            with atomic_dir(cfg.paths.finetuned) as out:
                task.save(module, cfg, meta, out)
                shutil.copy(Path(cfg.paths.tokenizer) / "tokenizer.json", out / "tokenizer.json")
                # The tokenizer it was trained with, which its copy beside it must be
                # (lmforge.data.pairing: evaluate, generate and export check it); data/tokenizer
                # replaced while this ran is refused here, before anything is written.
                check_tokenizer_file(
                    out / "tokenizer.json",
                    meta[TOKENIZER_KEY],
                    Path(cfg.paths.shards) / "meta.json",
                    "tokenize",
                )
                config = json.loads((out / "config.json").read_text())
                write_json(out / "config.json", {**config, TOKENIZER_KEY: meta[TOKENIZER_KEY]})
                write_json(
                    out / "meta.json",
                    {
                        "pipeline_id": training.pipeline,
                        "mlflow_run_id": training.run_id,
                        **tags,
                        **metrics,
                    },
                )
                write_json(staging / "finetune.json", metrics)
                mlflow.log_metrics({task.objective: score, **settled})
                mlflow.log_artifact(str(staging / "finetune.json"))
                log_checkpoints(checkpoints.best_model_path, checkpoints.last_model_path)
                staged = replace(cfg, paths=replace(cfg.paths, metrics=str(staging)))
                task.after_fit(module, val_loader, staged, meta)
            publish(cfg, staging, training.plan.folder / "curves")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        task.log_model(cfg, Path(cfg.paths.finetuned))
    print(
        f"finetune: {task.name}, best {task.monitor} {score:.3f} after {trainer.current_epoch} "
        f"epochs; MLflow run {training.run_id}"
    )
    return score


def publish(cfg: Config, staging: Path, curves: Path) -> None:
    """Put the run's metrics files (``staging``) and learning curve (``curves``) in place, and
    remove the files of its kind a previous run of another task left (its per-class report)."""
    from lmforge.core.task_registry import names, task_class

    metrics, plots = Path(cfg.paths.metrics), Path(cfg.paths.plots)
    owned = {"finetune.json", *(f for name in names() for f in task_class(name).finetune_metrics)}
    for name in sorted(owned):
        if not (staging / name).is_file():
            (metrics / name).unlink(missing_ok=True)
    for path in staging.iterdir():
        os.replace(path, metrics / path.name)
    for suffix in (".csv", ".png"):
        curve = curves / Path(CURVES).with_suffix(suffix)
        if curve.is_file():
            with atomic_file(plots / curve.name) as tmp:
                shutil.copyfile(curve, tmp)
        else:
            (plots / curve.name).unlink(missing_ok=True)


main = stage(run)

if __name__ == "__main__":
    main()
