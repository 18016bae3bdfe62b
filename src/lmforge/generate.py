"""Generate text: ``python -m lmforge.generate``.

Continue a prompt with a causal LM (the pretrain stage's ``models/pretrained`` after
``pretrain=clm``), or run a finetuned model whose task writes text (``models/finetuned``; the
task's ``generates`` and :meth:`~lmforge.tasks.base.Task.generator`) over one input or a file of
inputs:

    python -m lmforge.generate generate.prompt="Return the"              # print one output
    python -m lmforge.generate generate.input=sources.txt generate.output=out.jsonl \\
        generate.strategy=beam generate.num_beams=5

``generate.model`` picks the folder (default: ``models/finetuned`` when its task generates
text, else ``models/pretrained``). Decoding: ``generate.strategy`` greedy | beam (``num_beams``,
``length_penalty``) | sample (``temperature``, ``top_k``, ``top_p``, ``seed``), ``max_new_tokens``;
every row stops at its end-of-sequence token; ``generate.rerank=K`` (a model finetuned with
``task.retrieval=true``) lets the targets of the K nearest training pairs compete with the
decoded text, and each output row says ``retrieved`` true or false. An input file is one input
per line (``.txt``) or any file ``data.source`` reads (its ``text_columns``); the output is JSON
lines ``{"input", "output", "tokens"}`` in input order. Inputs longer than the context are cut and
counted: a text-to-text source keeps its first ``max_source_len`` tokens, as in training; a
prompt to continue keeps its last tokens, leaving room for ``max_new_tokens``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmforge.core.cli import stage
from lmforge.core.config import Config
from lmforge.core.errors import UserError
from lmforge.core.io import atomic_file, load_json, output_file
from lmforge.core.task_registry import get_task, tasks_that


def folder_task(folder: Path) -> Any:
    """The task recorded in a model folder's ``config.json`` (None: no task, e.g. a pretrained LM)."""
    config = folder / "config.json"
    stage = "pretrain" if folder.name == "pretrained" else "finetune"
    name = load_json(config, stage).get("task") if config.exists() else None
    return None if name is None else get_task(name)


def generating_tasks() -> str:
    return " or ".join(f"task={name}" for name in tasks_that("generates"))


def default_model(cfg: Config) -> Path:
    finetuned = Path(cfg.paths.finetuned)
    task = folder_task(finetuned)
    if task is not None and task.generates:
        return finetuned
    pretrained = Path(cfg.paths.pretrained)
    if (pretrained / "lm.pt").is_file():
        return pretrained
    raise UserError(
        f"no model that generates: {finetuned} holds no text-to-text model and "
        f"{pretrained} no language model; finetune with {generating_tasks()}, pretrain with "
        "pretrain=clm, or set generate.model=FOLDER"
    )


def load_generator(cfg: Config, folder: Path) -> Any:
    """The folder's model as its task's generator; a pretrained causal LM (no task) is run by
    the generator of a task that generates (it continues prompts)."""
    from lmforge.data.pairing import check_model_folder

    task = folder_task(folder)
    # Its tokenizer copy is the one it was trained with (a folder that records none: unchecked).
    check_model_folder(folder, "pretrain" if task is None else "finetune")
    if task is None:
        task = get_task(tasks_that("generates")[0])
    return task.generator(folder, cfg.data.clean)


def read_inputs(cfg: Config, path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"generate.input={path}: no such file")
    if path.suffix in (".txt", ""):
        return path.read_text(encoding="utf-8").splitlines()
    from lmforge.data.sources import read_local

    return [
        r["text"]
        for r in read_local(
            path, text_columns=cfg.data.source.text_columns, label_column=None, format=cfg.data.source.format
        )
    ]


def run(cfg: Config) -> None:
    g = cfg.generate
    if g.prompt is None and not g.input:
        raise UserError("nothing to generate from: give generate.prompt=TEXT or generate.input=FILE")
    if g.output:
        output_file(g.output, "generate.output")
    folder = Path(g.model) if g.model else default_model(cfg)

    from tqdm import tqdm

    model = load_generator(cfg, folder)
    texts = [g.prompt] if g.prompt is not None else read_inputs(cfg, Path(g.input or ""))
    if not texts:
        raise UserError(f"generate.input={g.input} holds no input")
    with tqdm(
        total=len(texts),
        desc="generate",
        unit=" texts",
        mininterval=1.0,
        disable=None if len(texts) > 1 else True,
    ) as bar:
        out = model.generate(texts, g, progress=bar.update)
    notes = []
    if out.truncated_inputs:
        side = "last" if model.continuation else "first"
        notes.append(f"{out.truncated_inputs} input(s) longer than the context, cut to their {side} tokens")
    if out.stopped_at_context:
        notes.append(
            f"{out.stopped_at_context} output(s) stopped at the context limit "
            f"({model.model.cfg.max_len} tokens)"
        )
    if g.prompt is not None and not g.output:
        print(out.texts[0])
    else:
        output = Path(g.output or Path(cfg.paths.metrics) / "generated.jsonl")
        with atomic_file(output) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            retrieved = out.retrieved or [None] * len(texts)
            for text, generated, n, origin in zip(texts, out.texts, out.tokens, retrieved, strict=True):
                row = {"input": text, "output": generated, "tokens": n}
                if origin is not None:  # generate.rerank: a training target, or the decoder's text
                    row["retrieved"] = origin
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"generate: {len(texts)} output(s) from {folder} ({g.strategy}) -> {output}")
    for note in notes:
        print(f"generate: note: {note}")


main = stage(run)

if __name__ == "__main__":
    main()
