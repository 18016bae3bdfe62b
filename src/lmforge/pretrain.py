"""Stage 4, pretrain: self-supervised pretraining of a Transformer encoder from scratch, by masked
language modelling (``pretrain.objective=mlm``), ELECTRA replaced-token detection (``electra``)
or causal language modelling, next-token prediction (``clm``).

Reads ``data/shards`` (train for training, val for held-out MLM loss/accuracy; or, when
``corpus.*`` names a pretraining corpus, its train/val shards in ``data/shards/corpus``) and writes
``models/pretrained/`` (``encoder.pt`` state dict, ``config.json``, ``meta.json``) and
``metrics/pretrain.json``. With ``pretrain.enabled=false`` it writes no weights, only the marker
that finetuning should start from scratch, so the ablation changes nothing else.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

from lmforge.core.cli import stage
from lmforge.core.config import Config
from lmforge.core.errors import UserError
from lmforge.core.io import atomic_dir, write_json
from lmforge.data.pairing import KEY as TOKENIZER_KEY
from lmforge.lit.workspace import model_config, shard_meta


def matmul_peak(cfg: Config) -> float | None:
    """The MFU denominator, measured now on this device in the training precision."""
    import torch

    from lmforge.models.transformer import measure_matmul_peak_flops

    if cfg.trainer.accelerator == "cpu":
        return measure_matmul_peak_flops(seconds=0.5)
    if cfg.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        dtype = torch.bfloat16 if cfg.trainer.precision.startswith("bf16") else torch.float32
        return measure_matmul_peak_flops(dtype=dtype, n=8192, device="cuda", seconds=0.5)
    return None


def corpus_name(corpus: dict | None) -> str:
    """What pretraining reads, for MLflow: ``task`` or the corpus source (``local:PATH``, ...)."""
    if not corpus:
        return "task"
    source = corpus["source"]
    where = source.get("path") or source.get("name") or source.get("url")
    name = f"{source['kind']}:{where}" if where else source["kind"]
    return name + ("+task" if corpus.get("include_task_train") else "")


def continued_model(cfg: Config, meta: dict):
    """``model=hf``: the checkpoint with its language-model head, for continued (domain-adaptive)
    pretraining on the corpus; its shards must be the checkpoint's own ids."""
    from lmforge.lit.workspace import check_hf_shards, hf_checkpoint
    from lmforge.models.hf import HFLanguageModel

    check_hf_shards(cfg, meta)
    if cfg.pretrain.objective == "mlm" and meta["special_ids"].get("mask") is None:
        raise UserError(
            f"model.name_or_path={cfg.model.name_or_path}: its tokenizer has no mask token, so "
            "masked LM cannot continue; use pretrain=clm for a decoder, or pretrain.enabled=false"
        )
    return HFLanguageModel.pretrained(hf_checkpoint(cfg, start=False)[0], cfg.pretrain.objective)


def save_lmforge_model(
    cfg: Config,
    module,
    objective: str,
    pipeline: str,
    run_id: str | None,
    metrics: dict,
    tokenizer_sha256: str | None = None,
) -> None:
    """lmforge's own pretrained model: ``encoder.pt`` (what finetuning loads), ``lm.pt`` (the
    whole LM, where text-to-text and generation start), the tokenizer, sizes and metrics, and
    the digest of the tokenizer it was trained with (``meta.json``; :mod:`lmforge.data.pairing`)."""
    import torch

    with atomic_dir(cfg.paths.pretrained) as out:
        torch.save(module.model.encoder.state_dict(), out / "encoder.pt")
        if objective != "electra":  # the whole LM (head too), where text-to-text starts
            torch.save(module.model.state_dict(), out / "lm.pt")
        # A self-contained folder: `python -m lmforge.generate` continues text with it.
        shutil.copy(Path(cfg.paths.tokenizer) / "tokenizer.json", out / "tokenizer.json")
        write_json(out / "config.json", asdict(module.model_cfg))
        write_json(
            out / "meta.json",
            {
                "enabled": True,
                "pipeline_id": pipeline,
                "mlflow_run_id": run_id,
                TOKENIZER_KEY: tokenizer_sha256,
                **metrics,
            },
        )


def run(cfg: Config) -> None:
    from lmforge.tracking.runs import job_outputs

    cfg = job_outputs(cfg, "pretrain")  # a sweep job writes into its own folder
    meta = shard_meta(cfg)
    if not cfg.pretrain.enabled:
        from lmforge.lit.distributed import is_leader
        from lmforge.tracking.runs import pipeline_id

        if not is_leader():  # every rank of a torchrun/srun launch runs this: one writes
            return
        with atomic_dir(cfg.paths.pretrained) as out:
            write_json(out / "meta.json", {"enabled": False, "pipeline_id": pipeline_id()})
        write_json(Path(cfg.paths.metrics) / "pretrain.json", {"enabled": False})
        # dvc.yaml declares the loss curve as an output of this stage: an empty curve, not none.
        curve = Path(cfg.paths.plots) / "pretrain_loss.csv"
        curve.parent.mkdir(parents=True, exist_ok=True)
        curve.write_text("step,train_loss\n")
        print("pretrain: disabled (pretrain.enabled=false); finetuning starts from scratch")
        return

    from lmforge.data.datasets import PackedSequences
    from lmforge.data.tokenization import TokenShards
    from lmforge.lit.fit import fit_run, loaders, seed
    from lmforge.lit.mlm import LitMaskedLM

    seed(cfg)
    p = cfg.pretrain
    # A corpus of its own (corpus.source, encoded by tokenize into shards/corpus) replaces the
    # task's train/val text; the task's splits are then never read here.
    corpus = meta.get("corpus")
    shard_dir = Path(cfg.paths.shards) / "corpus" if corpus else Path(cfg.paths.shards)
    train = PackedSequences(TokenShards(shard_dir, "train"), p.seq_len)
    val = PackedSequences(TokenShards(shard_dir, "val"), p.seq_len)
    if len(train) < p.batch_size:
        raise UserError(
            f"{shard_dir}: the train split packs into {len(train)} sequences of "
            f"{p.seq_len} tokens, fewer than one batch (pretrain.batch_size="
            f"{p.batch_size}); lower pretrain.batch_size or pretrain.seq_len, or add text"
        )
    train_loader, val_loader = loaders(cfg, train, val, batch_size=p.batch_size, drop_last=True)
    model_cfg = model_config(cfg, meta["vocab_size"])
    hf_model = continued_model(cfg, meta) if cfg.model.is_hf else None
    # MFU counts lmforge's own architecture's FLOPs; a checkpoint's are not modelled.
    peak = None if hf_model is not None else matmul_peak(cfg)
    module = LitMaskedLM(
        model_cfg,
        mask_rate=p.mask_rate,
        special_ids=meta["special_ids"],
        optim=p.optim,
        total_steps=p.max_steps,
        seed=cfg.seed,
        peak_flops=peak,
        objective=p.objective,
        generator_layers=p.generator_layers,
        disc_weight=p.disc_weight,
        model=hf_model,
    )
    if cfg.trainer.compile:
        module.model.compile()  # in place: state_dict keys stay those of the plain model

    with fit_run(cfg, "pretrain") as training:
        import mlflow

        if training.new_run:  # a resumed run has them (params cannot change)
            mlflow.log_params(
                {
                    "model.parameters": module.model.num_parameters(),
                    "data.train_sequences": len(train),
                    "data.pretrain_corpus": corpus_name(corpus),
                    "data.pretrain_tokens": len(train.stream),
                    "perf.peak_flops": peak or 0,
                }
            )
            if (Path(cfg.paths.tokenizer) / "tokenizer.json").is_file():
                mlflow.log_artifact(str(Path(cfg.paths.tokenizer) / "tokenizer.json"))
        trainer = training.fit(
            module,
            train_loader,
            val_loader,
            curve=Path(cfg.paths.plots) / "pretrain_loss.csv",
            per_step_curve=True,
            lr_key="pretrain.optim.lr",
            max_steps=p.max_steps,
            val_check_interval=min(p.val_check_interval, len(train_loader)),
            check_val_every_n_epoch=None,
            limit_val_batches=p.limit_val_batches,
            gradient_clip_val=p.optim.grad_clip or None,
        )
        if not training.leader:
            return
        final = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics = {
            "val_loss": final.get("val/loss"),
            "val_perplexity": final.get("val/perplexity"),
            f"val_{module.accuracy_name}": final.get(f"val/{module.accuracy_name}"),
            "val_disc_accuracy": final.get("val/disc_accuracy"),
            "tokens_per_s": final.get("perf/tokens_per_s"),
            "mfu": final.get("perf/mfu"),
            "loader_wait_fraction": training.loader_wait.fraction,
            "steps": trainer.global_step,
        }
        if hf_model is not None:
            from lmforge.lit.workspace import HF_FOLDER, hf_model_record, save_checkpoint

            with atomic_dir(cfg.paths.pretrained) as out:
                # The checkpoint, pretrained further: a save_pretrained folder (with the
                # checkpoint's tokenizer files) that finetune starts from (lmforge.tasks).
                save_checkpoint(module.model, cfg, meta, out)
                write_json(out / "config.json", {"objective": p.objective, **hf_model_record(cfg, meta)})
                write_json(
                    out / "meta.json",
                    {
                        "enabled": True,
                        "pipeline_id": training.pipeline,
                        "mlflow_run_id": training.run_id,
                        "hf": {"name_or_path": cfg.model.name_or_path, "folder": HF_FOLDER},
                        TOKENIZER_KEY: meta[TOKENIZER_KEY],
                        **metrics,
                    },
                )
        else:
            save_lmforge_model(
                cfg, module, p.objective, training.pipeline, training.run_id, metrics, meta[TOKENIZER_KEY]
            )
        write_json(Path(cfg.paths.metrics) / "pretrain.json", metrics)
        mlflow.log_artifact(str(Path(cfg.paths.metrics) / "pretrain.json"))
    shown = ", ".join(
        f"{name} {metrics[key]:.3f}"
        for name, key in (
            ("val loss", "val_loss"),
            ("MLM accuracy", "val_mlm_accuracy"),
            ("next-token accuracy", "val_next_token_accuracy"),
            ("replaced-token accuracy", "val_disc_accuracy"),
        )
        if metrics.get(key) is not None
    )
    print(
        f"pretrain: {p.objective}, {trainer.global_step} steps"
        f"{', ' + shown if shown else ''}; MLflow run {training.run_id}"
    )


main = stage(run)

if __name__ == "__main__":
    main()
