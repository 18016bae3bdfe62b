"""Typed schemas for every config group, and the one home of every default value.

Each field's default here is the project's default: Hydra's ConfigStore holds them as
``lmforge_schema`` (:func:`register_schema`; ``src/hydra_plugins/lmforge_schema.py`` registers it
whenever Hydra starts, DVC's composition included), the first entry of ``conf/config.yaml``'s
defaults list. The YAML under ``conf/`` only overrides it: group options (``model=tiny``) and
presets (``experiment=...``) name just the values they change, and the default options name none
(``tests/test_defaults_home.py`` keeps it so). The effective default, ``experiment=builtin``
applied, is :func:`compose` (or ``python -m lmforge.<stage> --cfg job``), not ``Config()``.

The YAML tree is composed by Hydra (direct runs) or by DVC (``dvc exp run``, into
``params.yaml``); either way the result is merged into :class:`Config` here, so an unknown key, a
wrong type or an impossible value stops the run at start-up with one line, before any data is read
or any heavy library is imported. This module imports only the standard library and OmegaConf
(Hydra only inside :func:`register_schema` and :func:`compose`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from lmforge.core.errors import UserError

# A tag of `tags`: what MLflow accepts as a tag key.
TAG_NAME = re.compile(r"[\w./ -]+")
SOURCE_KINDS = ("stdlib", "local", "hf", "url")
DECODING_STRATEGIES = ("greedy", "beam", "sample")


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise UserError(f"config key '{key}': {message}")


@dataclass
class SourceConfig:
    """Where raw text comes from. ``kind`` picks the reader; the other keys are its options."""

    kind: str = "stdlib"
    path: str | None = None
    format: str | None = None
    text_columns: list[str] = field(default_factory=lambda: ["text"])
    label_column: str | None = "label"
    top_k: int = 10
    name: str | None = None
    split: str | None = None
    url: str | None = None
    sha256: str | None = None
    cache_dir: str | None = None
    max_records: int | None = None
    # Reader encoding (local and url files); null means UTF-8.
    encoding: str | None = None
    # Optional {raw label: class name}: every label must be a key, so a typo or a stray class in
    # the data stops collect with the row that holds it instead of becoming a class of its own.
    label_map: dict[str, Any] | None = None
    # Text-to-text data: the column (csv/tsv/jsonl/parquet/hf) holding the target text; records
    # then carry `target` and no label. On the stdlib source, `summary` pairs each docstring's
    # summary line (target) with the rest of the docstring (text): the docsum task.
    target_column: str | None = None
    # Line-aligned parallel files (kind local): two file suffixes [source, target], e.g. [de, en]
    # reads PATH.de + PATH.en, where PATH (or a split's `file`) is the file stem, e.g. DIR/train.
    parallel: list[str] | None = None
    # Word-tagged data (a tag per word), one record per sentence: .conllu and .conll files always
    # (format conllu/conll); jsonl/parquet/hf when tags_column is set. tags_column is the tag
    # column: upos or xpos for CoNLL-U (null: upos), a column number for CoNLL (null: the last),
    # the column holding each row's list of tags for jsonl/parquet/hf, whose list of words is
    # words_column.
    words_column: str = "words"
    tags_column: str | None = None
    # Predefined splits, e.g. {train: {split: train, file: train.tsv}, test: {split: validation,
    # file: dev.tsv, text_columns: [content]}}: `split` names the hub split (kind hf); `file`, a
    # path under `path` (a file stem with `parallel`), with optional text_columns/label_column/
    # target_column for that file (kind local, or hf with `path` set). Splits not given here are
    # cut from train by prepare, by a seeded hash.
    splits: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(
            self.kind in SOURCE_KINDS,
            "data.source.kind",
            f"'{self.kind}' is not one of {', '.join(SOURCE_KINDS)}",
        )
        _check(self.top_k >= 2, "data.source.top_k", "a classifier needs at least 2 classes")
        if self.kind == "local":
            _check(
                bool(self.path),
                "data.source.path",
                "the local source needs a file or folder: data.source.path=DIR",
            )
        _check(bool(self.text_columns), "data.source.text_columns", "name at least one column")
        _check(
            self.max_records is None or self.max_records > 0,
            "data.source.max_records",
            "must be positive (null reads everything)",
        )
        if self.label_map is not None:
            _check(
                bool(self.label_map),
                "data.source.label_map",
                "is empty; map each raw label to a class name, or set it to null",
            )
            _check(
                self.label_column is not None,
                "data.source.label_map",
                "needs data.source.label_column (the column whose values it maps)",
            )
        for name, spec in self.splits.items():
            _check(
                name in ("train", "val", "test"),
                f"data.source.splits.{name}",
                "split names are train, val and test",
            )
            unknown = set(spec or {}) - {
                "split",
                "file",
                "text_columns",
                "label_column",
                "target_column",
                "tags_column",
            }
            _check(
                not unknown,
                f"data.source.splits.{name}",
                f"unknown option(s) {sorted(unknown)}; use split, file, text_columns, "
                "label_column, target_column",
            )
        if self.target_column is not None:
            _check(
                bool(self.target_column),
                "data.source.target_column",
                "is empty; name the column holding the target text, or set it to null",
            )
            _check(
                self.target_column not in self.text_columns,
                "data.source.target_column",
                f"'{self.target_column}' is also in data.source.text_columns; the source text "
                "and the target must be different columns",
            )
            _check(
                self.kind != "stdlib" or self.target_column == "summary",
                "data.source.target_column",
                f"the stdlib source has one target, 'summary' (docsum), not '{self.target_column}'",
            )
        if self.parallel is not None:
            suffixes = [str(s) for s in self.parallel]
            _check(
                len(suffixes) == 2 and all(s.strip(". ") for s in suffixes) and suffixes[0] != suffixes[1],
                "data.source.parallel",
                f"{suffixes} must be two different file suffixes [source, target], e.g. [de, en]",
            )
            _check(
                self.kind == "local",
                "data.source.parallel",
                f"parallel files are read by kind local, not '{self.kind}'; set data.source.kind=local",
            )
            _check(
                self.target_column is None,
                "data.source.parallel",
                "reads its targets from the second file; set data.source.target_column=null",
            )
        if self.target_column is not None or self.parallel is not None:
            _check(
                self.label_map is None,
                "data.source.label_map",
                "text-to-text records have no labels; set it to null",
            )
        if self.splits:
            _check("train" in self.splits, "data.source.splits", "a train entry is required")


@dataclass
class CleanConfig:
    normalization: str = "NFKC"
    lowercase: bool = False
    min_chars: int = 20
    max_chars: int = 20_000

    def __post_init__(self) -> None:
        _check(
            self.normalization in ("NFC", "NFKC", "NFD", "NFKD", "none"),
            "data.clean.normalization",
            "use one of NFC, NFKC, NFD, NFKD, none",
        )
        _check(self.min_chars >= 1, "data.clean.min_chars", "must be at least 1")
        _check(self.max_chars > self.min_chars, "data.clean.max_chars", "must exceed min_chars")


@dataclass
class SplitConfig:
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    # Phrase-level data (SST-2: every phrase of every sentence is a row): a text found inside a
    # longer text, as whole words, goes to that text's split, never held out apart from it.
    # Holds the records in memory; enumerates every word span of each longest text.
    group_substrings: bool = False

    def __post_init__(self) -> None:
        _check(0 < self.val_fraction < 1, "data.split.val_fraction", "must be in (0, 1)")
        _check(0 < self.test_fraction < 1, "data.split.test_fraction", "must be in (0, 1)")
        _check(
            self.val_fraction + self.test_fraction < 1,
            "data.split",
            "val_fraction + test_fraction must leave room for a train split",
        )


@dataclass
class DataConfig:
    source: SourceConfig = field(default_factory=SourceConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    split: SplitConfig = field(default_factory=SplitConfig)


# Where unlabelled pretraining text comes from: `none` pretrains on the task's own train text.
CORPUS_KINDS = ("none", "local", "hf", "url", "stdlib", "docstrings")


@dataclass
class CorpusSourceConfig:
    """An unlabelled corpus for pretraining and tokenizer training. Only ``text_columns`` are
    read: a label column in the same file is never opened, so it can neither break nor leak."""

    kind: str = "none"
    # local: a file or folder; hf: a local copy instead of the hub; stdlib: the stdlib folder
    # (null: this Python's); docstrings: the lock file naming the packages (null: requirements.lock).
    path: str | None = None
    format: str | None = None
    text_columns: list[str] = field(default_factory=lambda: ["text"])
    name: str | None = None
    split: str | None = None
    url: str | None = None
    sha256: str | None = None
    cache_dir: str | None = None
    encoding: str | None = None
    max_records: int | None = None

    def __post_init__(self) -> None:
        _check(
            self.kind in CORPUS_KINDS,
            "corpus.source.kind",
            f"'{self.kind}' is not one of {', '.join(CORPUS_KINDS)}",
        )
        _check(bool(self.text_columns), "corpus.source.text_columns", "name at least one column")
        _check(
            self.max_records is None or self.max_records > 0,
            "corpus.source.max_records",
            "must be positive (null reads everything)",
        )
        if self.kind == "local":
            _check(bool(self.path), "corpus.source.path", "the local corpus needs a file or folder")
        if self.kind == "hf":
            _check(
                bool(self.name or self.path),
                "corpus.source.name",
                "name a hub dataset (or set corpus.source.path to a local copy)",
            )
        if self.kind == "url":
            _check(bool(self.url), "corpus.source.url", "the url corpus needs a url")


@dataclass
class CorpusCleanConfig:
    normalization: str = "NFKC"
    lowercase: bool = False
    min_chars: int = 20
    max_chars: int = 20_000
    # Markup such as IMDB's `<br /><br />` becomes a space.
    strip_html: bool = False
    # Space out punctuation and split clitics as the Penn Treebank does ("it 's", "does n't"):
    # raw text then looks like SST-2's sentences to the tokenizer.
    split_punctuation: bool = False

    def __post_init__(self) -> None:
        _check(
            self.normalization in ("NFC", "NFKC", "NFD", "NFKD", "none"),
            "corpus.clean.normalization",
            "use one of NFC, NFKC, NFD, NFKD, none",
        )
        _check(self.min_chars >= 1, "corpus.clean.min_chars", "must be at least 1")
        _check(self.max_chars > self.min_chars, "corpus.clean.max_chars", "must exceed min_chars")


@dataclass
class CorpusConfig:
    source: CorpusSourceConfig = field(default_factory=CorpusSourceConfig)
    clean: CorpusCleanConfig = field(default_factory=CorpusCleanConfig)
    # A seeded hash of each text holds out this share for the pretraining validation loss.
    val_fraction: float = 0.01
    seed: int = 0
    # A corpus text equal to a task val/test text is always dropped; one that contains a val/test
    # text of at least this many words (as a run of whole words) is dropped too. null: equality only.
    holdout_min_words: int | None = 8
    # The same for a text-to-text val/test target (the answer): looked for inside from this many
    # words. null: equal texts only.
    holdout_target_min_words: int | None = 3
    # Pretrain on the task's train text as well as the corpus (the tokenizer always reads both).
    include_task_train: bool = True

    @property
    def enabled(self) -> bool:
        return self.source.kind != "none"

    def __post_init__(self) -> None:
        _check(0 < self.val_fraction < 1, "corpus.val_fraction", "must be in (0, 1)")
        _check(
            self.holdout_min_words is None or self.holdout_min_words >= 1,
            "corpus.holdout_min_words",
            "must be at least 1 (null: drop equal texts only)",
        )
        _check(
            self.holdout_target_min_words is None or self.holdout_target_min_words >= 1,
            "corpus.holdout_target_min_words",
            "must be at least 1 (null: drop equal texts only)",
        )


@dataclass
class TokenizerConfig:
    kind: str = "bpe"
    vocab_size: int = 4096
    min_frequency: int = 2
    lowercase: bool = False
    # Train the tokenizer on about this many train texts (sources, targets and corpus texts
    # alike), picked by a hash of each text so the sample is the same on every run and in every
    # order; null: every train text. Training time grows with the texts read, the vocabulary barely
    # changes past a few hundred thousand: set it (e.g. 1000000) for corpora of many millions.
    max_train_texts: int | None = None

    def __post_init__(self) -> None:
        _check(self.kind in ("bpe", "wordpiece"), "tokenizer.kind", "use bpe or wordpiece")
        _check(
            self.max_train_texts is None or self.max_train_texts >= 1,
            "tokenizer.max_train_texts",
            "must be at least 1 (null: train on every train text)",
        )
        _check(self.min_frequency >= 1, "tokenizer.min_frequency", "must be at least 1")
        # Five special tokens plus room for at least the byte/character alphabet.
        _check(
            self.vocab_size >= 300,
            "tokenizer.vocab_size",
            f"{self.vocab_size} leaves no room beyond the special tokens and the alphabet; use at least 300",
        )
        _check(self.vocab_size <= 2**31 - 1, "tokenizer.vocab_size", "too large")


@dataclass
class LoraConfig:
    """LoRA adapters (``peft``) on a pretrained checkpoint (``model=hf``): only the adapters and
    the task head train; the finetuned folder holds the adapters merged into the weights."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    # Module names to adapt (e.g. [query, value]); null: peft's default for the architecture.
    target_modules: list[str] | None = None

    def __post_init__(self) -> None:
        _check(self.r > 0, "model.lora.r", "must be positive")
        _check(self.alpha > 0, "model.lora.alpha", "must be positive")
        _check(0 <= self.dropout < 1, "model.lora.dropout", "must be in [0, 1)")
        _check(
            self.target_modules is None or bool(self.target_modules),
            "model.lora.target_modules",
            "is empty; name the modules to adapt, or set it to null for peft's default",
        )


# ModelConfig's keys that describe a pretrained checkpoint, not lmforge's own Transformer.
HF_MODEL_KEYS = ("name_or_path", "revision", "trust_remote_code", "lora")


@dataclass
class ModelConfig:
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 512
    max_len: int = 128
    dropout: float = 0.1
    causal: bool = False  # true: GPT-style attention, each token sees only those before it
    # true: dropout masks drawn 16 bits a time on the CPU (a 1.2x faster MLM training step,
    # docs/benchmarks.md); same distribution, other random stream, so figures change with it.
    fast_dropout: bool = False
    # model=hf: a Hugging Face hub id or local folder to start from instead of lmforge's own
    # Transformer (the sizes above are then the checkpoint's; max_len bounds the budgets).
    name_or_path: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)

    @property
    def is_hf(self) -> bool:
        return bool(self.name_or_path)

    def __post_init__(self) -> None:
        _check(
            self.name_or_path is None or bool(str(self.name_or_path).strip()),
            "model.name_or_path",
            "is empty; give a hub id (bert-base-uncased) or a local folder",
        )
        _check(
            not self.lora.enabled or self.is_hf,
            "model.lora.enabled",
            "LoRA adapts a pretrained checkpoint; use model=hf model.name_or_path=ID",
        )
        for key in ("d_model", "n_layers", "n_heads", "d_ff", "max_len"):
            _check(getattr(self, key) > 0, f"model.{key}", "must be positive")
        _check(
            self.d_model % self.n_heads == 0,
            "model.n_heads",
            f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}",
        )
        _check(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")
        _check(
            not (self.fast_dropout and self.is_hf),
            "model.fast_dropout",
            "applies to lmforge's own Transformer; a model=hf checkpoint keeps its own dropout",
        )


@dataclass
class OptimConfig:
    lr: float = 1e-3  # pretraining's rate; Config.optim (finetuning) sets its own, 3e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_ratio: float = 0.06
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    # Layer-wise lr decay for finetuning a pretrained encoder: block i of L trains at
    # lr * layer_decay ** (L - i), the embeddings at lr * layer_decay ** (L + 1), the head at lr.
    # 1.0 turns it off; ~0.8 is ELECTRA's choice for small models.
    layer_decay: float = 1.0

    def check(self, prefix: str) -> None:
        """Validate under the key the user wrote: called by the parents, ``optim`` from
        :class:`Config` and ``pretrain.optim`` from :class:`PretrainConfig`, so a message never
        names the wrong one."""
        _check(self.lr > 0, f"{prefix}.lr", f"{self.lr} must be positive")
        _check(self.weight_decay >= 0, f"{prefix}.weight_decay", "must be >= 0")
        _check(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            f"{prefix}.betas",
            "give two values in [0, 1)",
        )
        _check(0 <= self.warmup_ratio < 1, f"{prefix}.warmup_ratio", "must be in [0, 1)")
        _check(0 <= self.min_lr_ratio <= 1, f"{prefix}.min_lr_ratio", "must be in [0, 1]")
        _check(self.grad_clip >= 0, f"{prefix}.grad_clip", "must be >= 0 (0 turns clipping off)")
        _check(0 < self.layer_decay <= 1, f"{prefix}.layer_decay", "must be in (0, 1] (1 turns it off)")
        _check(
            prefix == "optim" or self.layer_decay == 1,
            f"{prefix}.layer_decay",
            "layer-wise decay is for finetuning a pretrained encoder; set optim.layer_decay",
        )


# Masked LM (BERT), replaced-token detection (ELECTRA), next-token prediction (GPT).
PRETRAIN_OBJECTIVES = ("mlm", "electra", "clm")


@dataclass
class PretrainConfig:
    enabled: bool = True
    objective: str = "mlm"  # or electra (pretrain=electra), clm (pretrain=clm: next-token prediction)
    mask_rate: float = 0.15
    # ELECTRA only: depth of the generator that fills the masks, and the weight of the
    # replaced-token-detection loss next to the generator's MLM loss (50 in the paper).
    generator_layers: int = 1
    disc_weight: float = 50.0
    seq_len: int = 128
    batch_size: int = 32
    max_steps: int = 300
    val_check_interval: int = 100
    limit_val_batches: int = 10
    # Pretraining's own optimizer: OptimConfig's defaults (lr 1e-3, a from-scratch rate).
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        self.optim.check("pretrain.optim")
        _check(
            self.objective in PRETRAIN_OBJECTIVES,
            "pretrain.objective",
            f"'{self.objective}' is not one of {', '.join(PRETRAIN_OBJECTIVES)}",
        )
        _check(self.generator_layers > 0, "pretrain.generator_layers", "must be positive")
        _check(self.disc_weight > 0, "pretrain.disc_weight", "must be positive")
        _check(0 < self.mask_rate < 1, "pretrain.mask_rate", f"{self.mask_rate} is outside (0, 1)")
        _check(self.batch_size > 0, "pretrain.batch_size", "must be positive")
        _check(self.seq_len > 1, "pretrain.seq_len", "must be at least 2")
        _check(self.max_steps > 0, "pretrain.max_steps", "must be positive")
        _check(self.val_check_interval > 0, "pretrain.val_check_interval", "must be positive")
        _check(self.limit_val_batches > 0, "pretrain.limit_val_batches", "must be positive")


@dataclass
class FinetuneConfig:
    batch_size: int = 32
    max_epochs: int = 6
    patience: int = 2
    pooling: str = "mean"
    max_len: int = 128
    # Batch texts of similar length together (less padding: ~3x fewer tokens on SST-2).
    group_by_length: bool = True
    # Validate (and keep the best checkpoint, count patience) this many times per epoch: 0.5
    # scores every half epoch. A fraction of an epoch, as Lightning's val_check_interval.
    val_check_interval: float = 1.0
    # An exponential moving average of the weights (Lightning's WeightAveraging), with this decay
    # per step: validation, the best checkpoint and the saved model use the averaged weights.
    # null: none.
    ema_decay: float | None = None
    # lmforge's own classifier: train this many classifiers side by side, each from its own initialisation,
    # and predict by their mean class probabilities (one model folder; K times the compute).
    ensemble: int = 1
    # lmforge's own classifier: fit a logistic regression over TF-IDF weighted word uni- and bigrams (the
    # baselines stage's, on token ids, hashed into ngram_buckets) before finetuning, and predict by
    # a mix of its class probabilities and the classifier's, the weight chosen on validation.
    # null: on wherever it can be (a task that supports fusion, lmforge's own model, no ensemble),
    # off elsewhere: the default recipe's choice (conf/experiment/builtin.yaml).
    ngram_fusion: bool | None = False
    ngram_buckets: int = 1048576
    # The n-gram model reads the first this many tokens of each text, the encoder the first
    # max_len: a bag of n-grams is cheap over a whole review, where the encoder's cost grows with
    # the square of the length (IMDB: TF-IDF + logistic regression over the first 100 words
    # 86.0 %, the whole review 91.7 %). 0: the encoder's max_len.
    ngram_max_len: int = 1024
    # At most this many training examples are seen, in whole epochs (at least one): max_epochs
    # on a small train split, fewer on a large one (50,000: one epoch of 40,000 IMDB reviews).
    # null: max_epochs, whatever the data's size.
    budget_examples: int | None = None

    @property
    def fusion_buckets(self) -> int:
        """The n-gram model's buckets with ``ngram_fusion``, else 0 (no n-gram model)."""
        return self.ngram_buckets if self.ngram_fusion else 0

    def input_len(self) -> int:
        """How many tokens of a text (with [CLS] and [SEP]) the classifier reads: ``max_len``,
        or the n-gram model's ``ngram_max_len`` when it fuses one and that is longer."""
        return max(self.max_len, self.ngram_max_len) if self.ngram_fusion else self.max_len

    def epochs(self, train_examples: int) -> int:
        """The epochs to run over ``train_examples``: ``max_epochs``, bounded by
        ``budget_examples`` (whole epochs, at least one)."""
        if self.budget_examples is None:
            return self.max_epochs
        return max(1, min(self.max_epochs, self.budget_examples // max(train_examples, 1)))

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "finetune.batch_size", "must be positive")
        _check(self.ensemble >= 1, "finetune.ensemble", "must be >= 1 (1: a single model)")
        _check(self.ngram_buckets >= 1, "finetune.ngram_buckets", "must be >= 1, e.g. 1048576")
        _check(
            self.ngram_max_len == 0 or self.ngram_max_len >= 3,
            "finetune.ngram_max_len",
            "must be at least 3 ([CLS], a token, [SEP]), or 0 for the encoder's max_len",
        )
        _check(
            self.budget_examples is None or self.budget_examples > 0,
            "finetune.budget_examples",
            "must be positive, or null for max_epochs whatever the data's size",
        )
        _check(
            not (self.ngram_fusion and self.ensemble > 1),
            "finetune.ngram_fusion",
            "fuses one classifier with an n-gram model; set finetune.ensemble=1 to use it",
        )
        _check(
            self.ema_decay is None or 0.0 < self.ema_decay < 1.0,
            "finetune.ema_decay",
            "must be in (0, 1), e.g. 0.999, or null for no weight averaging",
        )
        _check(
            0 < self.val_check_interval <= 1,
            "finetune.val_check_interval",
            "a fraction of an epoch in (0, 1], e.g. 0.5 to validate every half epoch",
        )
        _check(self.max_epochs > 0, "finetune.max_epochs", "must be positive")
        _check(self.pooling in ("mean", "cls"), "finetune.pooling", "use mean or cls")
        _check(self.patience >= 0, "finetune.patience", "must be >= 0")
        # [CLS] and [SEP] take two positions; one more is needed for any text at all.
        _check(self.max_len >= 3, "finetune.max_len", "must be at least 3 ([CLS], a token, [SEP])")


@dataclass
class TaskConfig:
    """The task axis (:mod:`lmforge.tasks`): ``name`` picks the task, and the rest of ``task.*``
    is that task's own dataclass, a subclass of this one its Task registers
    (``Task.config_class``, e.g. ``lmforge/tasks/<name>/config.py``): :func:`validate` merges
    the composed config into it, so a key of another task, or of none, stops the run."""

    name: str = ""


def task_class(name: str) -> Any:
    """The Task class registered as ``task=name`` (:mod:`lmforge.core.task_registry`, imported
    here only when a config is built: it is light, but not needed to read this module)."""
    from lmforge.core.task_registry import task_class as lookup

    try:
        return lookup(name)
    except UserError as exc:
        raise UserError(f"config key 'task.name': {exc}") from None


def task_config(name: str | None = None, **values: Any) -> TaskConfig:
    """The registered ``task.*`` dataclass of task ``name`` (null: the default task)."""
    from lmforge.core.task_registry import DEFAULT

    return task_class(name or DEFAULT).config_class(**({"name": name or DEFAULT} | values))


def _tasks_that(capability: str) -> str:
    from lmforge.core.task_registry import tasks_that

    names = [f"task={n}" for n in tasks_that(capability)]
    return " or ".join(names) if names else "a task that takes it"


@dataclass
class GenerateConfig:
    """Decoding options of ``python -m lmforge.generate`` and of text-to-text evaluation."""

    strategy: str = "greedy"  # greedy | beam | sample
    max_new_tokens: int = 64
    num_beams: int = 4  # beam
    length_penalty: float = 1.0  # beam: score / length ** length_penalty
    temperature: float = 1.0  # sample
    top_k: int = 0  # sample: keep the k likeliest tokens (0: all)
    top_p: float = 1.0  # sample: nucleus (1.0: all)
    seed: int = 0  # sample
    batch_size: int = 32
    # Retrieve and rerank (a text-to-text model finetuned with task.retrieval=true): the decoded
    # text competes with the targets of the `rerank` nearest training pairs (TF-IDF); each
    # candidate scores its mean log-likelihood per token under the model plus
    # `rerank_similarity` x the cosine of its pair's source to the input (0 for the decoded
    # text), and the best is the output. 0 turns it off.
    rerank: int = 0
    rerank_similarity: float = 10.0
    # A prompt to continue (causal LM), or an input file of sources (one per line, or the
    # data.source columns) and where to write the outputs.
    prompt: str | None = None
    input: str | None = None
    output: str | None = None  # null: metrics/generated.jsonl
    model: str | None = None  # a model folder; null: models/finetuned, else models/pretrained

    def __post_init__(self) -> None:
        _check(
            self.strategy in DECODING_STRATEGIES,
            "generate.strategy",
            f"'{self.strategy}' is not one of {', '.join(DECODING_STRATEGIES)}",
        )
        _check(self.max_new_tokens > 0, "generate.max_new_tokens", "must be positive")
        _check(self.num_beams > 0, "generate.num_beams", "must be positive")
        _check(self.temperature > 0, "generate.temperature", "must be positive")
        _check(self.top_k >= 0, "generate.top_k", "must be >= 0 (0 turns it off)")
        _check(0 < self.top_p <= 1, "generate.top_p", "must be in (0, 1]")
        _check(self.batch_size > 0, "generate.batch_size", "must be positive")
        _check(self.rerank >= 0, "generate.rerank", "must be >= 0 (0 turns it off)")
        _check(self.rerank_similarity >= 0, "generate.rerank_similarity", "must be >= 0")


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1
    # Machines taking part: each runs `devices` processes; Lightning reads the ranks from SLURM
    # (srun) or torchrun, else from MASTER_ADDR/MASTER_PORT/NODE_RANK (docs/scaling.md).
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_workers: int = 0
    # null: $OMP_NUM_THREADS if set, else every CPU.
    num_threads: int | None = None
    deterministic: bool = True
    log_every_n_steps: int = 10
    fast_dev_run: bool = False
    # Debugging (conf/debug/): train on this many batches per epoch (an int) or this share of
    # them (a float); validate on as many; train and validate on the same few batches again and
    # again (overfit_batches); time every hook and write the report (profiler: simple or
    # advanced) under outputs/profiler/, logged with the run. null: Lightning's default.
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    overfit_batches: Any = None
    profiler: str | None = None
    pin_memory: bool = False
    compile: bool = False
    # Periodic checkpoints of pretraining and finetuning (0 turns either trigger off); an
    # interrupted run resumes from the newest one (see docs/reliability.md).
    checkpoint_every_n_steps: int = 100
    checkpoint_every_minutes: float = 10.0

    def __post_init__(self) -> None:
        _check(
            self.accelerator in ("cpu", "gpu", "cuda", "mps", "tpu", "auto"),
            "trainer.accelerator",
            f"'{self.accelerator}' is not one of cpu, gpu, cuda, mps, tpu, auto",
        )
        _check(self.num_workers >= 0, "trainer.num_workers", "must be >= 0")
        _check(self.num_nodes >= 1, "trainer.num_nodes", "must be at least 1")
        _check(
            self.num_threads is None or self.num_threads > 0,
            "trainer.num_threads",
            "must be positive (null uses every core)",
        )
        _check(self.log_every_n_steps > 0, "trainer.log_every_n_steps", "must be positive")
        for key in ("limit_train_batches", "limit_val_batches", "overfit_batches"):
            value = getattr(self, key)
            _check(
                value is None
                or (type(value) is int and value >= 0)
                or (type(value) is float and 0 <= value <= 1),
                f"trainer.{key}",
                f"{value!r} is neither a number of batches (an int) nor a share of them (a float "
                "in [0, 1]); null leaves it to Lightning",
            )
        _check(
            self.profiler in (None, "simple", "advanced"),
            "trainer.profiler",
            f"'{self.profiler}' is not one of simple, advanced (null: no profiler)",
        )
        _check(
            self.checkpoint_every_n_steps >= 0,
            "trainer.checkpoint_every_n_steps",
            "must be >= 0 (0 turns step checkpoints off)",
        )
        _check(
            self.checkpoint_every_minutes >= 0,
            "trainer.checkpoint_every_minutes",
            "must be >= 0 (0 turns timed checkpoints off)",
        )


@dataclass
class LoggerConfig:
    # null: $MLFLOW_TRACKING_URI if set, else sqlite:///<project root>/mlflow.db
    tracking_uri: str | None = None
    experiment: str = "lmforge"
    # The Model Registry name each finetuned classifier is registered under; null: log, don't register.
    registered_model: str | None = "lmforge-classifier"
    # CPU, memory, disk and network of training runs, as system/* metrics.
    system_metrics: bool = True


@dataclass
class EvalConfig:
    file: str | None = None
    output: str | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "eval.batch_size", "must be positive")


@dataclass
class VectorsConfig:
    """Distributional word vectors for the tagger and classifier (:mod:`lmforge.word_vectors`)."""

    enabled: bool = False
    dim: int = 64
    # The most frequent words get vectors: at most max_words, each seen at least min_count times.
    max_words: int = 80000
    min_count: int = 3
    # Context words: the most frequent `contexts`, at each offset up to `window` on either side.
    contexts: int = 3000
    window: int = 2
    # The share of the corpus's train texts read (a seeded hash sample, the same texts on every
    # run): the pretraining budget of the vectors, for payoff curves. The task's train text is
    # always read whole.
    corpus_fraction: float = 1.0

    def __post_init__(self) -> None:
        for key in ("dim", "max_words", "min_count", "contexts", "window"):
            _check(getattr(self, key) > 0, f"vectors.{key}", "must be positive")
        _check(0.0 <= self.corpus_fraction <= 1.0, "vectors.corpus_fraction", "must be within [0, 1]")


@dataclass
class PathsConfig:
    raw: str = "data/raw"
    prepared: str = "data/prepared"
    tokenizer: str = "data/tokenizer"
    shards: str = "data/shards"
    corpus_raw: str = "data/corpus/raw"
    corpus_prepared: str = "data/corpus/prepared"
    pretrained: str = "models/pretrained"
    word_vectors: str = "models/word_vectors"
    finetuned: str = "models/finetuned"
    metrics: str = "metrics"
    plots: str = "plots"
    # One stable folder per training stage (checkpoints + resume.json), so a rerun finds them.
    checkpoints: str = "outputs/checkpoints"


@dataclass
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    task: TaskConfig = field(default_factory=task_config)
    vectors: VectorsConfig = field(default_factory=VectorsConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    # The finetuning optimizer: OptimConfig's defaults but the learning rate (pretraining's
    # is pretrain.optim).
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-4))
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    # Extra Lightning callbacks of pretrain and finetune, added to their own: name -> a mapping
    # with `_target_` (the class) and its arguments, built by hydra.utils.instantiate. Picked
    # from conf/callbacks/ (`callbacks=[default,lr_monitor]`); `callbacks.NAME=null` drops one.
    callbacks: dict[str, Any] = field(default_factory=dict)
    # Labels of the run: each becomes an MLflow tag NAME=true on every stage's run (tags=[a,b]).
    tags: list[str] = field(default_factory=list)
    # null: resume an interrupted pretrain/finetune run when its checkpoint and config hash match,
    # else start fresh; true: resume or fail; false: always start fresh (checkpoints discarded).
    resume: bool | None = None

    def __post_init__(self) -> None:
        self.optim.check("optim")
        for name, spec in self.callbacks.items():
            _check(
                spec is None or isinstance(spec, dict) and bool(spec.get("_target_")),
                f"callbacks.{name}",
                "must be a mapping with _target_ (the callback's class) and its arguments, "
                "or null to drop it",
            )
        for tag in self.tags:
            _check(
                bool(TAG_NAME.fullmatch(str(tag))) and not str(tag).startswith(("mlflow.", "lmforge.")),
                "tags",
                f"{tag!r} is no MLflow tag name: letters, digits and _ - . / space, not starting "
                "with mlflow. or lmforge.",
            )
        # Cross-group checks: caught here at start-up instead of after data loading.
        _check(
            not (self.model.is_hf and self.pretrain.enabled and self.pretrain.objective == "electra"),
            "pretrain.objective",
            "model=hf continues a checkpoint's own objective: pretrain=mlm for an encoder (BERT), "
            "pretrain=clm for a decoder (GPT-2), or pretrain.enabled=false",
        )
        _check(
            not (self.model.is_hf and self.pretrain.enabled and self.pretrain.optim.lr > 5e-4),
            "pretrain.optim.lr",
            f"{self.pretrain.optim.lr:g} is a from-scratch rate; continuing a published checkpoint at "
            "it would overwrite what it learned: use pretrain=continued (5e-5), set "
            "pretrain.optim.lr <= 5e-4, or pretrain.enabled=false to skip pretraining",
        )
        if type(self.task) is TaskConfig:  # built in code with the base class: the task's own
            self.task = task_config(self.task.name)
        task = task_class(self.task.name)
        # The task's capabilities say what it takes; the hint lists the tasks that take it.
        if self.vectors.enabled and not (task.supports_word_vectors and not self.model.is_hf):
            raise UserError(
                "config key 'vectors.enabled': word vectors feed lmforge's own tagger and classifier "
                f"only: use them with {_tasks_that('supports_word_vectors')} (not model=hf), or set "
                "vectors.enabled=false"
            )
        fusion_fits = task.supports_fusion and not self.model.is_hf
        if self.finetune.ngram_fusion is None:  # the default recipe's "wherever it can be"
            self.finetune.ngram_fusion = fusion_fits and self.finetune.ensemble == 1
        if (self.finetune.ensemble > 1 or self.finetune.ngram_fusion) and not fusion_fits:
            key = "finetune.ensemble" if self.finetune.ensemble > 1 else "finetune.ngram_fusion"
            raise UserError(
                f"config key '{key}': an ensemble or an n-gram fusion takes lmforge's own classifier "
                f"only: use it with {_tasks_that('supports_fusion')} (not model=hf), or set "
                "finetune.ensemble=1 and finetune.ngram_fusion=false"
            )
        _check(
            self.pretrain.seq_len <= self.model.max_len,
            "pretrain.seq_len",
            f"{self.pretrain.seq_len} exceeds model.max_len={self.model.max_len}; "
            "lower one or raise the other",
        )
        _check(
            self.finetune.max_len <= self.model.max_len,
            "finetune.max_len",
            f"{self.finetune.max_len} exceeds model.max_len={self.model.max_len}; "
            "lower one or raise the other",
        )
        # The task's own cross-group checks (text-to-text budgets against model.max_len, ...).
        task.check(self)


def schema_keys(schema: type = Config, prefix: str = "", task: str | None = "") -> set[str]:
    """Every dotted key the schema accepts, e.g. ``{"seed", "data", "data.source", ...}``.

    A free-form mapping (``data.source.splits``) is listed as ``"data.source.splits.*"``: any key
    below it is accepted. ``task.*`` is task ``task``'s dataclass ("": the default task's; None:
    any registered task's).
    """
    keys: set[str] = set()
    for f in fields(schema):
        key = f"{prefix}{f.name}"
        keys.add(key)
        if schema is Config and f.name == "task":
            from lmforge.core.task_registry import names

            for name in names() if task is None else [task or None]:
                keys |= schema_keys(type(task_config(name)), key + ".")
            continue
        default = f.default_factory() if callable(f.default_factory) else f.default
        if is_dataclass(default):
            keys |= schema_keys(type(default), key + ".")
        elif isinstance(default, dict):
            keys.add(key + ".*")
    return keys


def is_known_key(key: str, keys: set[str]) -> bool:
    parts = key.split(".")
    return key in keys or any(".".join(parts[:i]) + ".*" in keys for i in range(1, len(parts)))


def structured(task: str | None = None) -> Any:
    """``OmegaConf.structured(Config)`` with ``task.*`` typed by task ``task``'s dataclass."""
    from omegaconf import OmegaConf

    schema = OmegaConf.structured(Config)
    schema.task = OmegaConf.structured(type(task_config(task)))
    return schema


def validate(cfg: Any) -> Config:
    """Merge a composed config into the schema; one-line :class:`UserError` on any problem."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        node = cfg if OmegaConf.is_config(cfg) else OmegaConf.create(cfg or {})
        name = OmegaConf.select(node, "task.name", default=None)
        merged = OmegaConf.merge(structured(None if name is None else str(name)), node)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        reason = str(exc).splitlines()[0]
        if "not in struct" in reason or "Key '" in reason and "not in" in reason:
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            valid = sorted(
                k.split(".")[-1]
                for k in schema_keys(task=None if name is None else str(name))
                if k.rsplit(".", 1)[0] == parent and k.count(".") == key.count(".")
            )
            raise UserError(f"unknown config key '{key}'; valid keys here: {', '.join(valid)}") from None
        raise UserError(f"config key '{key}': {reason}") from None


# The ConfigStore name of the schema's defaults: the first entry of conf/config.yaml's defaults.
SCHEMA_NAME = "lmforge_schema"


def schema_defaults() -> dict[str, Any]:
    """Every key of :class:`Config` with its default, as plain containers (what Hydra composes)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(Config))  # type: ignore[return-value]


def find_root(start: Path | None = None) -> Path:
    """The project root: the nearest folder above ``start`` (default: cwd) holding ``conf/``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "conf" / "config.yaml").is_file():
            return folder
    raise UserError(f"no conf/config.yaml in {here} or above; run lmforge from the project folder")


def register_schema() -> None:
    """Store :func:`schema_defaults` in Hydra's ConfigStore under :data:`SCHEMA_NAME`.

    Plain containers, not the dataclass: the composed config stays untyped, so :func:`validate`
    remains the one gate that reports a bad key or value (in one line), and ``params.yaml`` is
    written from it as before. Idempotent."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=schema_defaults())


def compose(overrides: list[str] | tuple[str, ...] = (), root: Any = None) -> Config:
    """The project's effective config: ``conf/`` composed by Hydra (the schema's defaults, the
    default group options, ``experiment=builtin``) with ``overrides``, validated. ``root``: the
    project folder (default: the nearest one above the working directory holding ``conf/``).
    What every stage reads when run without arguments; use it, not ``Config()``, for "the
    defaults"."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    conf = (Path(root) if root is not None else find_root()) / "conf"
    if not (conf / "config.yaml").is_file():
        raise UserError(f"no conf/config.yaml in {conf.parent}; run lmforge from the project folder")
    register_schema()
    try:
        with initialize_config_dir(str(conf.resolve()), version_base="1.3"):
            raw = hydra_compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(f"composing {conf}: {str(exc).splitlines()[0]}") from None
    return validate(raw)
