"""Stage 5, finetune: train a classification head (and the encoder) on the labelled train split.

Starts from ``models/pretrained/encoder.pt`` unless pretraining was disabled; early stopping and
checkpoint selection on validation macro F1. Writes ``models/finetuned/`` (``model.pt``,
``config.json`` with the label names, ``tokenizer.json``, ``meta.json``) and
``metrics/finetune.json``.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict
from pathlib import Path

from lmforge.cli import stage
from lmforge.config import Config
from lmforge.errors import UserError
from lmforge.io import atomic_dir, write_json
from lmforge.pretrain import model_config, shard_meta


def run(cfg: Config) -> float:
    """Finetune; return the best validation macro F1 (the objective of Hydra/Optuna sweeps)."""
    from lmforge.tracking import job_outputs

    cfg = job_outputs(cfg, "finetune")  # a sweep job writes into its own folder
    meta = shard_meta(cfg)
    pretrained = Path(cfg.paths.pretrained)
    if not (pretrained / "meta.json").is_file():
        raise UserError(f"{pretrained}/meta.json is missing; run the pretrain stage first")
    upstream = json.loads((pretrained / "meta.json").read_text())
    labels = meta["labels"]
    if len(labels) < 2:
        raise UserError(f"{cfg.paths.shards}: the data has {len(labels)} label(s); "
                        "finetuning needs a labelled source with at least two classes")

    import lightning as L
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from torch.utils.data import DataLoader

    from lmforge.curves import CurveWriter
    from lmforge.data.datasets import LabelledRecords, pad_batch
    from lmforge.data.tokenization import TokenShards
    from lmforge.lit.callbacks import LoaderWait, StopOnNonFiniteLoss
    from lmforge.lit.classifier import LitClassifier
    from lmforge.lit.resume import ResumableSampler, TrainingState, periodic_checkpoints, plan_resume
    from lmforge.lit.trainer import build_trainer, set_threads
    from lmforge.registry import log_checkpoints, log_classifier, log_val_report
    from lmforge.tracking import pipeline_id, stage_run, tracking_uri

    L.seed_everything(cfg.seed, workers=True)
    set_threads(cfg)
    f = cfg.finetune
    pad = meta["special_ids"]["pad"]
    train = LabelledRecords(TokenShards(cfg.paths.shards, "train"), f.max_len)
    val = LabelledRecords(TokenShards(cfg.paths.shards, "val"), f.max_len)
    if len(train) == 0 or len(val) == 0:
        raise UserError(f"{cfg.paths.shards}: no labelled records in the train or val split; "
                        "check data.source.label_column")

    def collate(items):
        return pad_batch(items, pad)

    # Resumable mid-epoch; own generators keep the global RNG for dropout alone (lit/resume.py).
    sampler = ResumableSampler(len(train), cfg.seed,
                               lengths=train.lengths if f.group_by_length else None,
                               batch_size=f.batch_size)
    train_loader = DataLoader(train, batch_size=f.batch_size, sampler=sampler, collate_fn=collate,
                              num_workers=cfg.trainer.num_workers,
                              pin_memory=cfg.trainer.pin_memory,
                              generator=torch.Generator().manual_seed(cfg.seed))
    val_loader = DataLoader(val, batch_size=cfg.eval.batch_size, collate_fn=collate,
                            num_workers=cfg.trainer.num_workers, pin_memory=cfg.trainer.pin_memory,
                            generator=torch.Generator().manual_seed(cfg.seed))
    # Texts longer than the context lose their tail: counted, printed and logged, never silent.
    truncated = {"train": train.truncated, "val": val.truncated}
    if any(truncated.values()):
        print(f"finetune: {truncated['train']} of {len(train)} train and {truncated['val']} of "
              f"{len(val)} val texts exceed finetune.max_len={f.max_len} tokens and are truncated")
    model_cfg = model_config(cfg, meta["vocab_size"])
    total_steps = f.max_epochs * math.ceil(len(train) / f.batch_size)
    module = LitClassifier(model_cfg, num_labels=len(labels), pooling=f.pooling, optim=cfg.optim,
                           total_steps=total_steps)
    if cfg.trainer.compile:
        module.model.compile()
    tags = {"lmforge.pretrain_run_id": upstream.get("mlflow_run_id", "none"),
            "lmforge.pretrained": str(upstream.get("enabled", False)).lower()}
    if upstream.get("enabled"):
        state = torch.load(pretrained / "encoder.pt", map_location="cpu", weights_only=True)
        module.model.encoder.load_state_dict(state)
        tags["lmforge.pretrain_checkpoint"] = str(pretrained / "encoder.pt")

    plan = plan_resume(cfg, "finetune")
    plan.drop_missing_run(tracking_uri(cfg))
    with stage_run(cfg, "finetune", pipeline_id(pretrained / "meta.json"),
                   extra_tags=tags, run_id=plan.run_id) as run:
        import mlflow

        plan.record(run.info.run_id, pipeline_id(pretrained / "meta.json"))
        if plan.run_id is None:  # a resumed run has them (and MLflow params cannot change)
            mlflow.log_params({"data.train_examples": len(train), "data.val_examples": len(val),
                               "data.num_labels": len(labels)})
            mlflow.log_metrics({f"data/truncated_{k}": v for k, v in truncated.items()})
        checkpoints = ModelCheckpoint(dirpath=plan.folder, monitor="val/f1", mode="max",
                                      save_top_k=1, save_last=True, filename="best")
        stopper = EarlyStopping(monitor="val/f1", mode="max", patience=f.patience)
        loader_wait = LoaderWait()
        callbacks = [TrainingState(sampler, f.batch_size), checkpoints, stopper, loader_wait,
                     *periodic_checkpoints(cfg, plan.folder),
                     StopOnNonFiniteLoss("finetune", plan.folder, "optim.lr"),
                     CurveWriter(Path(cfg.paths.plots) / "finetune_curves.csv", per_step=False)]
        trainer = build_trainer(cfg, run.info.run_id, tracking_uri(cfg), callbacks=callbacks,
                                max_epochs=f.max_epochs, val_check_interval=f.val_check_interval,
                                gradient_clip_val=cfg.optim.grad_clip or None)
        trainer.fit(module, train_loader, val_loader, ckpt_path=plan.ckpt_path, weights_only=True)
        best_path = checkpoints.best_model_path
        if best_path:
            best = torch.load(best_path, map_location="cpu", weights_only=True)
            module.load_state_dict(best["state_dict"])
        best_f1 = float(checkpoints.best_model_score) if checkpoints.best_model_score is not None \
            else float(trainer.callback_metrics["val/f1"])
        metrics = {"best_val_f1": best_f1, "epochs": trainer.current_epoch,
                   "steps": trainer.global_step, "loader_wait_fraction": loader_wait.fraction}
        with atomic_dir(cfg.paths.finetuned) as out:
            torch.save(module.model.state_dict(), out / "model.pt")
            write_json(out / "config.json", {"model": asdict(model_cfg), "labels": labels,
                                             "pooling": f.pooling, "max_len": f.max_len})
            shutil.copy(Path(cfg.paths.tokenizer) / "tokenizer.json", out / "tokenizer.json")
            write_json(out / "meta.json", {"pipeline_id": pipeline_id(pretrained / "meta.json"),
                                           "mlflow_run_id": run.info.run_id, **tags, **metrics})
        write_json(Path(cfg.paths.metrics) / "finetune.json", metrics)
        mlflow.log_metric("best_val_f1", best_f1)
        mlflow.log_artifact(str(Path(cfg.paths.metrics) / "finetune.json"))
        log_checkpoints(checkpoints.best_model_path, checkpoints.last_model_path)
        log_val_report(module.model, val_loader, labels, Path(cfg.paths.metrics) / "val_per_class.json")
        log_classifier(cfg, Path(cfg.paths.finetuned))
    plan.clear()
    print(f"finetune: best val macro F1 {best_f1:.3f} after {trainer.current_epoch} epochs; "
          f"MLflow run {run.info.run_id}")
    return best_f1


main = stage(run)

if __name__ == "__main__":
    main()
