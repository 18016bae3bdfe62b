"""What the training and scoring stages share: the shards' metadata, the model config built from
``model.*`` and the data, and the record a stage leaves for the next one. Below every stage, so
stages never import each other."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from lmforge.core.config import Config
from lmforge.core.errors import UserError
from lmforge.core.io import load_json


def shard_meta(cfg: Config) -> dict:
    """``data/shards/meta.json``, once the shards are known to be ``data/tokenizer``'s: written
    by it as one unit (:mod:`lmforge.core.unit`) and recording its digest
    (:mod:`lmforge.data.pairing`); else one line saying to re-run tokenize."""
    from lmforge.core.unit import interrupted_commit
    from lmforge.data.pairing import KEY, check_tokenizer_file

    path = Path(cfg.paths.shards) / "meta.json"
    if interrupted_commit(cfg.paths.tokenizer, cfg.paths.shards):
        raise UserError(
            f"{cfg.paths.tokenizer} and {cfg.paths.shards} are half replaced (tokenize was killed "
            "while swapping them in); run the tokenize stage again (dvc repro tokenize)"
        )
    first = None if path.exists() else "run the tokenize stage first (dvc repro tokenize)"
    meta = load_json(path, "tokenize", first)
    tokenizer = Path(cfg.paths.tokenizer) / "tokenizer.json"
    if not tokenizer.is_file():
        raise UserError(f"{tokenizer} is missing; run the tokenize stage again (dvc repro tokenize)")
    if not meta.get(KEY):
        raise UserError(
            f"{path} records no tokenizer digest (written by an older lmforge), so nothing says it "
            f"belongs with {tokenizer}; run the tokenize stage again (dvc repro tokenize)"
        )
    check_tokenizer_file(tokenizer, meta[KEY], path, "tokenize", "says encoded the shards")
    return meta


def check_model_shards(folder: Path, meta: dict, cfg: Config, rerun: str) -> None:
    """The model in ``folder`` was trained with the tokenizer that encoded the shards (``meta``);
    a model folder written before digests existed is not checked."""
    from lmforge.data.pairing import KEY, check_same, folder_digest

    record, recorded = folder_digest(folder)
    check_same(record, recorded, Path(cfg.paths.shards) / "meta.json", meta.get(KEY), rerun)


def model_config(cfg: Config, vocab_size: int) -> Any:
    from lmforge.core.config import HF_MODEL_KEYS
    from lmforge.models.transformer import TransformerConfig

    # `model.*` keys are TransformerConfig's own field names (but those naming a pretrained
    # checkpoint, model=hf); the vocabulary comes from the data.
    sizes = {k: v for k, v in asdict(cfg.model).items() if k not in HF_MODEL_KEYS}
    return TransformerConfig(vocab_size=vocab_size, pad_id=0, **sizes)


def upstream_meta(folder: Path, stage: str) -> dict:
    """``folder/meta.json`` written by ``stage``, or a one-line error saying to run it."""
    return load_json(Path(folder) / "meta.json", stage)


# model=hf: the finetuned checkpoint's folder within models/finetuned/ (save_pretrained layout).
HF_FOLDER = "hf"


def save_checkpoint(model: Any, cfg: Config, meta: dict, out: Path) -> None:
    """A finetuned ``model=hf`` model as ``out/hf/``: ``save_pretrained`` weights (LoRA adapters
    merged in) with the checkpoint's tokenizer files, a folder ``AutoModelFor*`` and
    ``AutoTokenizer`` load as they are."""
    import shutil

    folder = out / HF_FOLDER
    folder.mkdir()
    model.save(folder)
    for path in Path(cfg.paths.tokenizer).iterdir():
        if path.is_file():
            shutil.copy(path, folder / path.name)


def hf_model_record(cfg: Config, meta: dict) -> dict:
    """What ``config.json`` says of a ``model=hf`` model: its origin, LoRA options, and the
    special ids its framing uses (the checkpoint's, not lmforge's)."""
    from dataclasses import asdict

    m = cfg.model
    return {
        "hf": {
            "name_or_path": m.name_or_path,
            "revision": m.revision,
            "trust_remote_code": m.trust_remote_code,
            "lora": asdict(m.lora),
            # The registered weights are the base model with the adapters merged in, never
            # the adapters alone: what serves needs neither peft nor the base checkpoint.
            "weights": "merged" if m.lora.enabled else "full",
        },
        "special_ids": meta["special_ids"],
    }


def model_special_ids(config: dict) -> dict:
    """The special ids a finetuned model frames text with: the checkpoint's for ``model=hf``,
    else lmforge's fixed ones."""
    from lmforge.data.tokenization import special_ids

    return config.get("special_ids") or special_ids()


def hf_checkpoint(cfg: Config, start: bool = True) -> tuple[Any, Any]:
    """``model.*`` as :class:`lmforge.models.hf.Checkpoint` and :class:`~lmforge.models.hf.Lora`.

    ``start``: the checkpoint finetuning starts from, which is the pretrain stage's
    save_pretrained folder where it continued pretraining this checkpoint
    (``models/pretrained/hf``), else ``model.name_or_path`` as published."""
    from dataclasses import asdict

    from lmforge.models.hf import Checkpoint, Lora

    m = cfg.model
    checkpoint = Checkpoint(m.name_or_path or "", m.revision, m.trust_remote_code)
    continued = continued_checkpoint(cfg) if start else None
    if continued is not None:
        checkpoint = Checkpoint(str(continued), None, m.trust_remote_code)
    return checkpoint, Lora(**asdict(m.lora))


def continued_checkpoint(cfg: Config) -> Path | None:
    """The pretrain stage's continued-pretrained copy of ``model.name_or_path``, if it made one
    (``meta.json`` enabled); a one-line error when it pretrained another model."""

    from lmforge.core.errors import UserError

    folder = Path(cfg.paths.pretrained)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    meta = load_json(meta_path, "pretrain")
    if not meta.get("enabled"):
        return None
    origin = meta.get("hf", {}).get("name_or_path")
    if origin != cfg.model.name_or_path or not (folder / HF_FOLDER / "config.json").is_file():
        pretrained = f"model.name_or_path={origin}" if origin else "lmforge's own model"
        raise UserError(
            f"{folder} holds {pretrained}, pretrained, but model.name_or_path="
            f"{cfg.model.name_or_path} is set; rerun the pretrain stage (dvc repro pretrain), or "
            "set pretrain.enabled=false there to finetune the checkpoint as published"
        )
    return folder / HF_FOLDER


def check_hf_shards(cfg: Config, meta: dict) -> None:
    """The shards were encoded by the tokenizer of the model about to train (either way)."""

    tokenizer = meta.get("tokenizer", {})
    encoded = tokenizer.get("name_or_path") if tokenizer.get("kind") == "hf" else None
    if encoded != cfg.model.name_or_path:
        said = f"{encoded}'s tokenizer" if encoded else "lmforge's own tokenizer"
        wanted = f"model.name_or_path={cfg.model.name_or_path}" if cfg.model.is_hf else "lmforge's model"
        raise UserError(
            f"{cfg.paths.shards} was encoded with {said}, but {wanted} is set; rerun the "
            "tokenize stage with the same model.* (dvc repro tokenize)"
        )
