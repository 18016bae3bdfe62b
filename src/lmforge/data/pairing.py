"""Which tokenizer made what: a sha256 of ``tokenizer.json``, recorded by everything its ids
reach, and checked where two of them are read together.

The tokenize stage records the digest of the tokenizer that encoded the shards in
``data/shards/meta.json``; pretrain records it in ``models/pretrained/meta.json``, finetune in
``models/finetuned/config.json``. A reader that pairs two of them (shards with
``data/tokenizer``, a pretrained encoder with the shards, a model folder with its own
``tokenizer.json`` copy) refuses a mismatch in one line naming both files and the stage to run
again. Only ``tokenizer.json`` is hashed (a few MB at most), never the shards.

Artifacts written before digests existed: shards without one are refused (re-running tokenize
is cheap, and ``dvc repro`` re-runs it anyway after an upgrade: its code is a dependency); a
model folder without one is accepted unchecked (retraining is not cheap, and a model folder is
written in one atomic step with its tokenizer copy).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lmforge.core.errors import UserError

KEY = "tokenizer_sha256"


def tokenizer_digest(path: str | Path) -> str:
    """sha256 of a ``tokenizer.json`` file (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "none"


def check_tokenizer_file(
    tokenizer: Path, recorded: str | None, record: Path, rerun: str, what: str = "was written with"
) -> None:
    """``tokenizer`` (a ``tokenizer.json``) is the one ``record`` says it ``what``; else one
    line naming both files and ``rerun`` (a stage name). ``recorded`` None: no check."""
    if recorded is None or not tokenizer.is_file():
        return
    actual = tokenizer_digest(tokenizer)
    if actual != recorded:
        raise UserError(
            f"{tokenizer} (sha256 {_short(actual)}) is not the tokenizer {record} {what} "
            f"(sha256 {_short(recorded)}); they do not belong together: re-run the {rerun} "
            f"stage (dvc repro {rerun})"
        )


def check_same(
    first: Path, first_digest: str | None, second: Path, second_digest: str | None, rerun: str
) -> None:
    """Two records (a model and the shards it reads) name the same tokenizer; no check where
    either records none (written before digests existed)."""
    if first_digest is None or second_digest is None or first_digest == second_digest:
        return
    raise UserError(
        f"{first} was made with another tokenizer (sha256 {_short(first_digest)}) than "
        f"{second} (sha256 {_short(second_digest)}); re-run the {rerun} stage (dvc repro {rerun})"
    )


def folder_digest(folder: Path) -> tuple[Path, str | None]:
    """The digest a model folder records and the file that records it: ``config.json``'s (a
    finetuned model), else ``meta.json``'s (a pretrained one); None when neither does."""
    for name in ("config.json", "meta.json"):
        path = Path(folder) / name
        if path.is_file():
            try:
                recorded = json.loads(path.read_text()).get(KEY)
            except (ValueError, AttributeError):
                continue  # a corrupt file is its reader's to report
            if recorded:
                return path, recorded
    return Path(folder) / "config.json", None


def check_model_folder(folder: Path, rerun: str) -> str | None:
    """A model folder agrees with its own ``tokenizer.json`` copy; return its digest."""
    record, recorded = folder_digest(folder)
    check_tokenizer_file(Path(folder) / "tokenizer.json", recorded, record, rerun, "was trained with")
    return recorded
