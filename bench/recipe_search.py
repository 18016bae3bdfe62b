"""Search pretraining + finetuning recipes fast, on a GPU, at a CPU run's step counts.

The SST-2 recipe has to fit a 2-core CPU budget, where one pretrain + finetune trial takes
~15 minutes: far too slow to search by. This script replays the same recipe — lmforge's own
model, masking, packing, batching, optimizer and schedule, step for step — in a plain loop on
whatever device is at hand, many trials in parallel, so a grid that would take a day on the CPU
takes minutes on a GPU. The steps are what transfers: pick ``steps`` from the CPU's measured
tokens/s and the minutes the CPU run may spend (the grid file says how it was done).

    python bench/recipe_search.py --shards data/shards --grid bench/grids/sst2.json \\
        --device cuda --jobs 8 --out reports/recipe_search.json

Each trial: optional pretraining (``objective`` mlm, electra or clm; ``"text": "roots"`` for only
the texts that lie inside no other one), then one or more finetuning runs from that encoder (or
from scratch; ``layer_decay``, ``ema`` to score a moving average of the weights), each scored on
the val split ``evals_per_epoch`` times an epoch; the test accuracy/F1 reported is that of the
check with the best val F1, as the finetune stage does.
No Lightning, Hydra or MLflow: only torch and lmforge's plain modules, so it runs on a bare
PyTorch image. Not part of the pipeline; a tool for choosing a conf/experiment/*.yaml.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

DEFAULT_MODEL = {"d_model": 256, "n_layers": 4, "n_heads": 4, "d_ff": 1024, "max_len": 128, "dropout": 0.1}
DEFAULT_PRETRAIN = {
    "objective": "mlm",
    "steps": 0,
    "batch": 64,
    "seq": 64,
    "lr": 1e-3,
    "mask_rate": 0.15,
    "warmup": 0.06,
    "weight_decay": 0.01,
    "generator_layers": 1,
    "disc_weight": 50.0,
    "dropout": None,
    "text": "all",
}
DEFAULT_FINETUNE = {
    "lr": 2e-4,
    "epochs": 2,
    "batch": 64,
    "warmup": 0.05,
    "weight_decay": 0.01,
    "pooling": "mean",
    "max_len": 66,
    "evals_per_epoch": 1,
    "group_by_length": True,
    "layer_decay": 1.0,
    "ema": 0.0,
}


def schedule(optimizer, total: int, warmup_ratio: float):
    from lmforge.lit.optim import warmup_linear

    warmup = max(1, int(warmup_ratio * total))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_linear(step, total, warmup, 0.0))


def make_optimizer(model, lr: float, weight_decay: float, betas=(0.9, 0.98), layer_decay: float = 1.0):
    from lmforge.lit.optim import adamw, param_groups

    return adamw(param_groups(model, weight_decay, lr, layer_decay), lr=lr, betas=betas)


def pretrain(spec: dict, model_cfg, shards: str, device: torch.device, seed: int) -> dict:
    """The pretrain stage's loop: packed windows, fresh masks per step, clip 1.0."""
    from dataclasses import replace

    from lmforge.data.datasets import PackedSequences
    from lmforge.data.masking import mask_tokens, next_token_targets
    from lmforge.data.tokenization import TokenShards
    from lmforge.models.electra import Electra
    from lmforge.models.transformer import MaskedLM

    shard = TokenShards(shards, "train")
    special = shard.meta["special_ids"]
    data = PackedSequences(shard, spec["seq"])
    if spec["text"] == "roots":  # only the texts inside no other one: each sentence once, no pieces
        keep = whole_texts(Path(shards).parent / "prepared" / "train.jsonl")
        if keep is None or len(keep) != len(shard.offsets) - 1:
            raise RuntimeError("text=roots needs the prepared train split beside the shards")
        # The packed stream holds each record followed by its [SEP]: keep the kept records' spans.
        data.stream = data.stream[np.repeat(keep, np.diff(shard.offsets) + 1)]
    cfg = replace(model_cfg, dropout=spec["dropout"]) if spec["dropout"] is not None else model_cfg
    if spec["objective"] == "clm":  # as LitMaskedLM: next-token prediction needs causal attention
        cfg = replace(cfg, causal=True)
    torch.manual_seed(seed)
    if spec["objective"] == "electra":
        model = Electra(cfg, spec["generator_layers"], spec["disc_weight"]).to(device)
    else:
        model = MaskedLM(cfg).to(device)
    optimizer = make_optimizer(model, spec["lr"], spec["weight_decay"])
    lr_schedule = schedule(optimizer, spec["steps"], spec["warmup"])
    order = torch.Generator().manual_seed(seed)
    masks = torch.Generator().manual_seed(seed * 1_000_003)
    sampler = torch.Generator(device=device).manual_seed(seed * 1_000_033)
    perm, cursor, losses = torch.randperm(len(data), generator=order), 0, []
    model.train()
    for step in range(spec["steps"]):
        if cursor + spec["batch"] > len(perm):
            perm, cursor = torch.randperm(len(data), generator=order), 0
        batch = torch.stack([data[int(i)] for i in perm[cursor : cursor + spec["batch"]]])
        cursor += spec["batch"]
        if spec["objective"] == "clm":  # the head at every position but the last: next token
            loss, _ = model(*(t.to(device) for t in next_token_targets(batch)))
            mlm_loss = loss
        else:
            inputs, positions, targets = mask_tokens(
                batch,
                mask_rate=spec["mask_rate"],
                mask_id=special["mask"],
                vocab_size=cfg.vocab_size,
                special_ids=list(special.values()),
                generator=masks,
            )
            inputs, positions, targets = (
                t.to(device, non_blocking=True) for t in (inputs, positions, targets)
            )
            if spec["objective"] == "electra":
                out = model(inputs, positions, targets, batch.to(device), generator=sampler)
                loss, mlm_loss = out.loss, out.mlm_loss
            else:
                loss, _ = model(inputs, positions, targets)
                mlm_loss = loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        if step % 50 == 0 or step == spec["steps"] - 1:
            losses.append((step, round(mlm_loss.item(), 4), round(loss.item(), 4)))
    return {
        "encoder": {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()},
        "mlm_loss_curve": losses,
        "epochs_of_text": spec["steps"] * spec["batch"] / len(data),
    }


@torch.no_grad()
def score(model, loader, device) -> tuple[float, float]:
    model.eval()
    preds, golds = [], []
    for batch in loader:
        logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        preds.append(logits.argmax(-1).cpu())
        golds.append(batch["labels"])
    model.train()
    pred, gold = torch.cat(preds), torch.cat(golds)
    classes = int(max(pred.max(), gold.max())) + 1
    f1s = []
    for c in range(classes):
        tp = float(((pred == c) & (gold == c)).sum())
        fp = float(((pred == c) & (gold != c)).sum())
        fn = float(((pred != c) & (gold == c)).sum())
        f1s.append(2 * tp / max(1.0, 2 * tp + fp + fn))
    return float((pred == gold).float().mean()), sum(f1s) / len(f1s)


@functools.lru_cache(maxsize=4)
def whole_texts(path: Path):
    """A boolean mask over the rows of a prepared split: True where the text is no word span of
    another text of the split. None when the file is not there (shards without ``../prepared``).
    Cached: every finetune of a trial asks for the same validation split."""
    from lmforge.core.io import read_jsonl
    from lmforge.data.cleaning import group_substrings

    if not path.is_file():
        return None
    texts = [record["text"] for record in read_jsonl(path)]
    # Each text its own split: a text inside a longer one is sent to that one's split.
    own = [str(i) for i in range(len(texts))]
    return np.array([placed == mine for placed, mine in zip(group_substrings(texts, own), own, strict=True)])


def finetune(spec: dict, model_cfg, shards: str, device, seed: int, encoder: dict | None) -> dict:
    """The finetune stage's loop: shuffled records, padded per batch, best epoch by val F1."""
    from torch.utils.data import DataLoader

    from lmforge.data.datasets import LabelledRecords, length_grouped_order, pad_batch
    from lmforge.data.tokenization import TokenShards
    from lmforge.models.transformer import SequenceClassifier

    splits = {
        name: LabelledRecords(TokenShards(shards, name), spec["max_len"]) for name in ("train", "val", "test")
    }
    sentences = whole_texts(Path(shards).parent / "prepared" / "val.jsonl")
    if sentences is not None and len(sentences) == len(splits["val"]):
        # Validation rows that are no piece of another validation row (SST-2: its sentences).
        splits["val_sentences"] = LabelledRecords(TokenShards(shards, "val"), spec["max_len"])
        splits["val_sentences"].rows = splits["val"].rows[sentences]
    pad = splits["train"].pad
    labels = len(splits["train"].shards.meta["labels"])

    def collate(items):
        return pad_batch(items, pad)

    def loader(name):
        return DataLoader(splits[name], batch_size=256, collate_fn=collate)

    order = torch.Generator().manual_seed(seed * 1_000_003)
    lengths = splits["train"].lengths
    if spec.get("train_limit"):  # smoke tests only
        splits["train"].rows = splits["train"].rows[: spec["train_limit"]]
        lengths = lengths[: spec["train_limit"]]

    def epoch_batches():
        """The finetune stage's batches: length-grouped (or plain shuffled) as configured."""
        if spec["group_by_length"]:
            idx = length_grouped_order(lengths, spec["batch"], order)
        else:
            idx = torch.randperm(len(lengths), generator=order).tolist()
        for i in range(0, len(idx), spec["batch"]):
            yield collate([splits["train"][j] for j in idx[i : i + spec["batch"]]])

    torch.manual_seed(seed)
    model = SequenceClassifier(model_cfg, num_labels=labels, pooling=spec["pooling"])
    if encoder is not None:
        missing, unexpected = model.encoder.load_state_dict(encoder, strict=False)
        if unexpected or (missing and len(encoder) > 2):
            raise RuntimeError(f"encoder state does not fit: missing {missing}, unexpected {unexpected}")
    model.to(device)
    per_epoch = math.ceil(len(lengths) / spec["batch"])
    total = spec["epochs"] * per_epoch
    optimizer = make_optimizer(model, spec["lr"], spec["weight_decay"], layer_decay=spec["layer_decay"])
    lr_schedule = schedule(optimizer, total, spec["warmup"])
    every = max(1, per_epoch // spec["evals_per_epoch"])
    averaged = None
    if spec["ema"]:  # scored instead of the live weights: an exponential moving average of them
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(spec["ema"]))
    scored = model if averaged is None else averaged.module
    history, best = [], None
    step = 0
    for _epoch in range(spec["epochs"]):
        for batch in epoch_batches():
            logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            loss = torch.nn.functional.cross_entropy(logits, batch["labels"].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            lr_schedule.step()
            if averaged is not None:
                averaged.update_parameters(model)
            step += 1
            if step % every == 0 or step == total:
                val_acc, val_f1 = score(scored, loader("val"), device)
                test_acc, test_f1 = score(scored, loader("test"), device)
                point = {
                    "step": step,
                    "epoch": round(step / per_epoch, 2),
                    "val_acc": val_acc,
                    "val_f1": val_f1,
                    "test_acc": test_acc,
                    "test_f1": test_f1,
                }
                if "val_sentences" in splits:
                    point["val_sentences_acc"], _ = score(scored, loader("val_sentences"), device)
                history.append(point)
                if best is None or val_f1 > best["val_f1"]:
                    best = point
    return {"best": best, "last": history[-1], "history": history}


def run_trial(trial: dict, shards: str, device: str) -> dict:
    from dataclasses import replace

    from lmforge.data.tokenization import TokenShards
    from lmforge.models.transformer import TransformerConfig

    torch.set_num_threads(int(os.environ.get("RECIPE_THREADS", "2")))
    dev = torch.device(device)
    seed = trial.get("seed", 0)
    vocab = TokenShards(shards, "train").meta["vocab_size"]
    model_cfg = TransformerConfig(vocab_size=vocab, pad_id=0, **{**DEFAULT_MODEL, **trial.get("model", {})})
    p = {**DEFAULT_PRETRAIN, **trial.get("pretrain", {})}
    start = time.perf_counter()
    result = {
        "name": trial["name"],
        "seed": seed,
        "model": trial.get("model", {}),
        "pretrain": trial.get("pretrain", {}),
        "finetunes": [],
    }
    encoder = None
    if p["steps"] > 0:
        out = pretrain(p, model_cfg, shards, dev, seed)
        encoder = out.pop("encoder")
        if trial.get("transfer", "all") == "embeddings":  # keep only what the embeddings learnt
            encoder = {k: v for k, v in encoder.items() if k.startswith(("tok_emb", "pos_emb"))}
        result.update(out)
    result["pretrain_seconds"] = round(time.perf_counter() - start, 1)
    for ft in trial.get("finetune", [{}]):
        f = {**DEFAULT_FINETUNE, **ft}
        cfg = replace(model_cfg, max_len=max(model_cfg.max_len, f["max_len"]))
        t0 = time.perf_counter()
        out = finetune(f, cfg, shards, dev, seed, encoder)
        result["finetunes"].append({"finetune": ft, **out, "seconds": round(time.perf_counter() - t0, 1)})
    return result


def _worker(args):
    trial, shards, device = args
    try:
        return run_trial(trial, shards, device)
    except Exception:  # one broken trial must not sink the grid; its error is reported
        return {"name": trial.get("name"), "error": traceback.format_exc(limit=5)}


def expand(grid: list[dict]) -> list[dict]:
    """``seeds: [0, 1, 2]`` in a trial stands for one copy of it per seed."""
    trials = []
    for trial in grid:
        for seed in trial.get("seeds", [trial.get("seed", 0)]):
            trials.append({**{k: v for k, v in trial.items() if k != "seeds"}, "seed": seed})
    return trials


def table(paths: list[Path]) -> str:
    """A Markdown table of result files: one row per trial and finetuning recipe, test accuracy
    per seed and their mean, with the pretraining's last logged (generator) MLM loss."""
    from collections import defaultdict
    from statistics import mean

    rows: dict[tuple, dict[int, float]] = defaultdict(dict)
    loss: dict[tuple, float | None] = {}
    for path in paths:
        for result in json.loads(path.read_text()):
            if "error" in result:
                continue
            for ft in result["finetunes"]:
                spec = {**DEFAULT_FINETUNE, **ft["finetune"]}
                # Finetuning settings other than lr and epochs that are not the defaults, so that
                # two finetunes of one encoder (say with and without "ema") keep a row each.
                extra = ", ".join(
                    f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in ft["finetune"].items()
                    if k not in ("lr", "epochs") and v != DEFAULT_FINETUNE.get(k)
                )
                name = f"{result['name']} ({extra})" if extra else result["name"]
                key = (path.stem, name, spec["lr"], spec["epochs"])
                rows[key][result["seed"]] = ft["best"]["test_acc"]
                curve = result.get("mlm_loss_curve")
                loss[key] = curve[-1][1] if curve else None
    lines = [
        "| results | trial | finetune lr | epochs | MLM loss at end | test acc by seed | mean |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in sorted(rows, key=lambda k: (k[0], k[1], k[2], k[3])):
        seeds = ", ".join(f"s{s} {100 * a:.1f}" for s, a in sorted(rows[key].items()))
        end = "—" if loss[key] is None else f"{loss[key]:.2f}"
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]:g} | {key[3]} | {end} | {seeds} | "
            f"{100 * mean(rows[key].values()):.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", default="data/shards")
    ap.add_argument("--grid", type=Path, help="JSON list of trials")
    ap.add_argument(
        "--table",
        type=Path,
        nargs="+",
        metavar="RESULTS",
        help="print a Markdown table of earlier --out files instead of running",
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--jobs", type=int, default=1, help="trials run at once")
    ap.add_argument("--only", default=None, help="run only trials whose name contains this")
    ap.add_argument("--out", type=Path, default=Path("reports/recipe_search.json"))
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.table))
        return
    if args.grid is None:
        ap.error("--grid is required to run trials")
    trials = expand(json.loads(args.grid.read_text())["trials"])
    if args.only:
        trials = [t for t in trials if args.only in t["name"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results, start = [], time.perf_counter()
    work = [(t, args.shards, args.device) for t in trials]
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs) as pool:
            stream = pool.imap_unordered(_worker, work)
            for result in stream:
                results.append(result)
                report(result, time.perf_counter() - start)
                args.out.write_text(json.dumps(results, indent=1))
    else:
        for item in work:
            results.append(_worker(item))
            report(results[-1], time.perf_counter() - start)
            args.out.write_text(json.dumps(results, indent=1))
    print(f"{len(results)} trials in {time.perf_counter() - start:.0f} s -> {args.out}")


def report(result: dict, elapsed: float) -> None:
    if "error" in result:
        print(f"[{elapsed:5.0f}s] {result['name']}: ERROR {result['error'].splitlines()[-1]}", flush=True)
        return
    curve = result.get("mlm_loss_curve")
    tail = f" mlm {curve[0][1]:.2f}->{curve[-1][1]:.2f}" if curve else ""
    for ft in result["finetunes"]:
        b = ft["best"]
        print(
            f"[{elapsed:5.0f}s] {result['name']} s{result['seed']} ft={ft['finetune']}{tail}: "
            f"test acc {b['test_acc']:.4f} f1 {b['test_f1']:.4f} (val {b['val_acc']:.4f}, "
            f"epoch {b['epoch']}; last test {ft['last']['test_acc']:.4f}) "
            f"pt {result['pretrain_seconds']}s ft {ft['seconds']}s",
            flush=True,
        )


if __name__ == "__main__":
    main()
