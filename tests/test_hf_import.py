"""``model=hf``: finetune a ``transformers`` checkpoint through lmforge's own stages, offline.

Tiny randomly initialised BERT-, GPT-2- and T5-style checkpoints are written with
``save_pretrained`` (their tokenizers built by ``tokenizers`` and wrapped as
``PreTrainedTokenizerFast``); each runs collect -> evaluate with ``model=hf`` for a task that fits
it (BERT: classification on the built-in corpus, also through LoRA; GPT-2 and T5: text-to-text on
a small pair corpus), and its F1 or BLEU lands in MLflow and ``metrics/``. A subprocess checks
that ``--help`` and the default pipeline import neither ``transformers`` nor ``peft``.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.core.errors import UserError
from lmforge.core.io import read_jsonl
from test_pipeline import tiny_config, working_dir

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("transformers")
pytest.importorskip("peft")


def english_texts() -> list[str]:
    """Text to train the tiny tokenizers on: docstrings of a few standard-library modules (the
    built-in corpus's own kind of text)."""
    import asyncio
    import collections
    import json as json_module
    import os as os_module
    import pathlib
    import re

    return [
        inspect.getdoc(obj) or ""
        for module in (asyncio, collections, json_module, os_module, pathlib, re)
        for _, obj in inspect.getmembers(module)
        if inspect.isfunction(obj) or inspect.isclass(obj)
    ]


def save_bert(folder: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(
        english_texts(),
        trainers.WordPieceTrainer(vocab_size=800, special_tokens=specials, show_progress=False),
    )
    tokenizer.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    BertForMaskedLM(config).save_pretrained(folder)
    wrapped.save_pretrained(folder)
    return folder


def pair_texts() -> list[str]:
    from test_text2text import LEXICON, sentences

    return [text for pair in sentences(400, 7, LEXICON) for text in pair]


def save_gpt2(folder: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        pair_texts(),
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    end = "<|endoftext|>"
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=end, eos_token=end, unk_token=end)
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=128,
        bos_token_id=0,
        eos_token_id=0,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    wrapped.save_pretrained(folder)
    return folder


def save_t5(folder: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(
        pair_texts(),
        trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"], show_progress=False),
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    config = T5Config(
        vocab_size=tokenizer.get_vocab_size(),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    T5ForConditionalGeneration(config).save_pretrained(folder)
    wrapped.save_pretrained(folder)
    return folder


def hf_overrides(checkpoint: Path) -> list[str]:
    return [
        "model=hf",
        f"model.name_or_path={checkpoint}",
        "model.max_len=128",
        "pretrain.enabled=false",
        "finetune.max_len=64",
    ]


def run_pipeline(workdir: Path, overrides: list[str]):
    from lmforge import collect, evaluate, finetune, prepare, pretrain, tokenize

    (workdir / "conf").symlink_to(ROOT / "conf")
    cfg = tiny_config(workdir, *overrides)
    with working_dir(workdir):
        for stage in (collect, prepare, tokenize, pretrain, finetune, evaluate):
            stage.run(cfg)
    return cfg


def finished_run(workdir: Path, stage: str):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    experiment = client.get_experiment_by_name(f"lmforge-{stage}")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    return run


# The built-in corpus (experiment=tiny: 4 classes); a tiny BERT learns in two epochs.
CLASSIFICATION = ["optim.lr=1e-3", "finetune.max_epochs=2"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return save_bert(tmp_path_factory.mktemp("bert-tiny"))


@pytest.mark.slow
@pytest.mark.ci
def test_bert_checkpoint_finetunes_as_a_classifier(bert, tmp_path) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lmforge.data.tokenization import TokenShards

    run_pipeline(tmp_path, [*hf_overrides(bert), *CLASSIFICATION, "logger.registered_model=hf-bert"])
    # The shards are the checkpoint's own ids: no tokenizer was trained.
    meta = json.loads((tmp_path / "data/shards/meta.json").read_text())
    assert meta["tokenizer"] == {"kind": "hf", "name_or_path": str(bert), "revision": None}
    assert meta["special_ids"]["cls"] == AutoTokenizer.from_pretrained(bert).cls_token_id
    first = next(read_jsonl(tmp_path / "data/prepared/val.jsonl"))
    own = Tokenizer.from_file(str(bert / "tokenizer.json"))
    expected = own.encode(first["text"], add_special_tokens=False).ids
    assert TokenShards(tmp_path / "data/shards", "val").record(0).tolist() == expected

    report = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert 0.0 <= report["f1"] <= 1.0 and report["examples"] > 0
    evaluated = finished_run(tmp_path, "evaluate").data.metrics
    assert evaluated["test_f1"] == pytest.approx(report["f1"])
    finetuned = finished_run(tmp_path, "finetune")
    assert finetuned.data.metrics["best_val_f1"] == pytest.approx(
        json.loads((tmp_path / "metrics/finetune.json").read_text())["best_val_f1"]
    )
    # The finetuned folder is a plain save_pretrained folder, and the registered model serves.
    folder = tmp_path / "models/finetuned/hf"
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.config.num_labels == len(report["per_class"])
    assert AutoTokenizer.from_pretrained(folder).cls_token == "[CLS]"
    import mlflow

    served = mlflow.pyfunc.load_model(f"runs:/{finetuned.info.run_id}/classifier").predict(
        ["Return the number of items in the queue."]
    )
    assert served["label"][0] in report["per_class"]


@pytest.mark.slow
@pytest.mark.ci
def test_lora_trains_only_the_adapters_and_the_head(bert, tmp_path) -> None:
    from transformers import AutoModelForSequenceClassification

    from lmforge.models.hf import Checkpoint, HFClassifier, Lora

    lora = Lora(enabled=True, r=4, alpha=8, dropout=0.0)
    model = HFClassifier.pretrained(Checkpoint(str(bert)), num_labels=3, pad_id=0, lora=lora)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    # BERT's default targets (query, value) in each of 2 layers: A (r x 32) and B (32 x r).
    adapters = sum(v for n, v in trainable.items() if "lora_" in n)
    assert adapters == 2 * 2 * (4 * 32 + 32 * 4)
    head = sum(v for n, v in trainable.items() if "classifier" in n)
    assert head == 32 * 3 + 3
    total = sum(p.numel() for p in model.parameters())
    assert model.trainable_parameters() == adapters + head < 0.1 * total

    # Scored like a full finetune; the registered folder holds the merged weights (no peft).
    run_pipeline(
        tmp_path, [*hf_overrides(bert), *CLASSIFICATION, "model.lora.enabled=true", "model.lora.r=4"]
    )
    report = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert 0.0 <= report["f1"] <= 1.0
    assert finished_run(tmp_path, "evaluate").data.metrics["test_f1"] == pytest.approx(report["f1"])
    config = json.loads((tmp_path / "models/finetuned/config.json").read_text())
    assert config["hf"]["weights"] == "merged" and config["hf"]["lora"]["r"] == 4
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "models/finetuned/hf")
    assert not any("lora" in n for n, _ in merged.named_parameters())


@pytest.mark.slow
@pytest.mark.ci
def test_bert_checkpoint_tags_words_of_a_conll_file(bert, tmp_path) -> None:
    from transformers import AutoModelForTokenClassification

    from test_tagging import ner_sentences, write_conll

    corpus = tmp_path / "ner"
    corpus.mkdir()
    write_conll(corpus / "train.txt", ner_sentences(200, 0)[0])
    test, spans = ner_sentences(30, 1)
    write_conll(corpus / "test.txt", test)
    workdir = tmp_path / "work"
    workdir.mkdir()
    run_pipeline(
        workdir,
        [
            *hf_overrides(bert),
            "task=tagging",
            "data.source.kind=local",
            f"data.source.path={corpus}",
            "data.source.format=conll",
            "+data.source.splits.train.file=train.txt",
            "+data.source.splits.test.file=test.txt",
            "optim.lr=1e-3",
            "finetune.max_epochs=2",
            "logger.registered_model=null",
        ],
    )
    report = json.loads((workdir / "metrics/eval.json").read_text())
    assert 0.0 <= report["f1"] <= 1.0 and report["entities"]["support"] == spans
    assert finished_run(workdir, "evaluate").data.metrics["test_f1"] == pytest.approx(report["f1"])
    tags = json.loads((workdir / "models/finetuned/config.json").read_text())["tags"]
    model = AutoModelForTokenClassification.from_pretrained(workdir / "models/finetuned/hf")
    assert model.config.num_labels == len(tags)


def pair_corpus(workdir: Path) -> Path:
    from test_text2text import LEXICON, sentences, write_pair

    corpus = workdir / "corpus"
    corpus.mkdir()
    write_pair(corpus / "train", ("de", "en"), sentences(300, 0, LEXICON))
    write_pair(corpus / "val", ("de", "en"), sentences(30, 1, LEXICON))
    return corpus


def text2text_overrides(corpus: Path) -> list[str]:
    return [
        "task=text2text",
        "data.source.kind=local",
        f"data.source.path={corpus}",
        "data.source.parallel=[de,en]",
        "+data.source.splits.train.file=train",
        "+data.source.splits.test.file=val",
        "data.clean.min_chars=1",
        "task.max_source_len=24",
        "task.max_target_len=24",
        "generate.max_new_tokens=24",
        "finetune.max_epochs=2",
        "optim.lr=3e-3",
    ]


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("architecture", ["gpt2", "t5"])
def test_decoder_and_encoder_decoder_checkpoints_write_text(architecture, tmp_path) -> None:
    from lmforge import generate
    from lmforge.models.hf import HFTextToText

    save = {"gpt2": save_gpt2, "t5": save_t5}[architecture]
    checkpoint = save(tmp_path / architecture)
    workdir = tmp_path / "work"
    workdir.mkdir()
    overrides = [*hf_overrides(checkpoint), *text2text_overrides(pair_corpus(workdir))]
    run_pipeline(workdir, overrides)
    report = json.loads((workdir / "metrics/eval.json").read_text())
    assert 0.0 <= report["sacrebleu"] <= 100.0 and report["examples"] > 0
    assert report["target_perplexity"] > 1.0
    assert finished_run(workdir, "evaluate").data.metrics["test_sacrebleu"] == pytest.approx(
        report["sacrebleu"]
    )
    model = HFTextToText.load(workdir / "models/finetuned/hf")
    assert model.encoder_decoder == (architecture == "t5")

    # python -m lmforge.generate decodes with the finetuned checkpoint too.
    inputs, output = workdir / "inputs.txt", workdir / "generated.jsonl"
    inputs.write_text("Ein mann läuft.\nDer hund sitzt.\n", encoding="utf-8")
    cfg = tiny_config(
        workdir,
        *overrides,
        f"generate.input={inputs}",
        f"generate.output={output}",
        "generate.max_new_tokens=5",
    )
    with working_dir(workdir):
        generate.run(cfg)
    rows = list(read_jsonl(output))
    assert [r["input"] for r in rows] == ["Ein mann läuft.", "Der hund sitzt."]
    assert all(0 <= r["tokens"] <= 5 for r in rows)


def test_config_says_what_model_hf_needs(tmp_path) -> None:
    with pytest.raises(UserError, match="pretrain.objective"):
        tiny_config(tmp_path, "model=hf", "model.name_or_path=x", "pretrain=electra")
    with pytest.raises(UserError, match="pretrain=continued"):  # 1e-3 would wipe the checkpoint out
        tiny_config(tmp_path, "model=hf", "model.name_or_path=x")
    continued = tiny_config(tmp_path, "model=hf", "model.name_or_path=x", "pretrain=continued")
    assert continued.pretrain.enabled and continued.pretrain.objective == "mlm"
    assert continued.pretrain.optim.lr == 5e-5
    from omegaconf import OmegaConf

    from lmforge.core.config import validate

    with pytest.raises(UserError, match="model.lora.enabled"):
        validate(OmegaConf.create({"model": {"lora": {"enabled": True}}, "pretrain": {"enabled": False}}))
    cfg = tiny_config(tmp_path, "model=hf", "pretrain.enabled=false")
    assert cfg.model.name_or_path == "bert-base-uncased" and not cfg.model.trust_remote_code


def test_shards_of_another_tokenizer_are_refused(tmp_path) -> None:
    from lmforge.lit.workspace import check_hf_shards

    cfg = tiny_config(tmp_path, "model=hf", "model.name_or_path=/models/a", "pretrain.enabled=false")
    with pytest.raises(UserError, match="rerun the tokenize stage"):
        check_hf_shards(cfg, {"tokenizer": {"kind": "bpe"}})
    with pytest.raises(UserError, match="/models/b's tokenizer"):
        check_hf_shards(cfg, {"tokenizer": {"kind": "hf", "name_or_path": "/models/b"}})
    check_hf_shards(cfg, {"tokenizer": {"kind": "hf", "name_or_path": "/models/a"}})
    with pytest.raises(UserError, match="lmforge's model"):
        check_hf_shards(tiny_config(tmp_path), {"tokenizer": {"kind": "hf", "name_or_path": "/models/a"}})


# Run in a fresh interpreter: what the default pipeline and --help import, nothing else loaded.
IMPORTS = """
import runpy, sys
sys.argv = ["lmforge.finetune", "--help"]
try:
    runpy.run_module("lmforge.finetune", run_name="__main__")
except SystemExit:
    pass
help_loaded = sorted(m for m in ("transformers", "peft") if m in sys.modules)
import lightning  # noqa: F401  (its torchmetrics would import transformers but for lmforge.core.import_guard)
by_lightning = sorted(m for m in ("transformers", "peft") if m in sys.modules)
from lmforge import collect, evaluate, finetune, prepare, pretrain, tokenize
from hydra import compose, initialize_config_dir
from lmforge.core.config import validate
with initialize_config_dir({conf!r}, version_base="1.3"):
    cfg = validate(compose("config", overrides={overrides!r}))
for stage in (collect, prepare, tokenize, pretrain, finetune, evaluate):
    stage.run(cfg)
import json
by_pipeline = sorted(m for m in ("transformers", "peft") if m in sys.modules)
print("LOADED", json.dumps([help_loaded, by_lightning, by_pipeline]))
"""


@pytest.mark.slow
@pytest.mark.ci
def test_help_and_the_default_pipeline_import_neither_transformers_nor_peft(tmp_path) -> None:
    overrides = [
        "experiment=tiny",
        f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        "pretrain.max_steps=4",
        "finetune.max_epochs=1",
    ]
    (tmp_path / "conf").symlink_to(ROOT / "conf")  # --help finds the project by its conf/
    code = IMPORTS.format(conf=str(ROOT / "conf"), overrides=overrides)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("LOADED")]
    assert loaded, done.stdout[-2000:]
    help_loaded, by_lightning, by_pipeline = json.loads(loaded[0][len("LOADED ") :])
    assert help_loaded == []
    # torchmetrics (through Lightning) would import transformers when it is installed; the guard
    # that `import lmforge` installs keeps it out, and the default stages load neither.
    assert by_lightning == []
    assert by_pipeline == []


GUARD = """
import sys
import lmforge  # noqa: F401
import torchmetrics
import torchmetrics.functional.text as text
print("LOADED", "transformers" in sys.modules, hasattr(text, "bert_score"))
"""


@pytest.mark.parametrize(("opt_out", "loaded"), [(None, "False False"), ("1", "True True")])
def test_the_import_guard_keeps_torchmetrics_from_loading_transformers(opt_out, loaded) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LMFORGE_TORCHMETRICS_TRANSFORMERS"}
    if opt_out:
        env["LMFORGE_TORCHMETRICS_TRANSFORMERS"] = opt_out
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", GUARD], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"LOADED {loaded}" in done.stdout


@pytest.mark.slow
@pytest.mark.ci
def test_bert_continues_masked_lm_pretraining_then_finetunes_from_it(bert, tmp_path) -> None:
    """``pretrain.enabled=true`` with ``model=hf``: domain-adaptive MLM on the corpus, saved as a
    save_pretrained folder, and the finetune stage starts from those weights, not the hub's."""
    import mlflow
    import torch
    from transformers import AutoModelForMaskedLM

    overrides = [o for o in hf_overrides(bert) if o != "pretrain.enabled=false"]
    run_pipeline(
        tmp_path,
        [
            *overrides,
            "pretrain.max_steps=12",
            "pretrain.seq_len=64",
            "pretrain.optim.lr=3e-4",
            # Finetuning barely moves the weights, so they show where it started.
            "optim.lr=1e-9",
            "finetune.max_epochs=1",
            "logger.registered_model=null",
        ],
    )
    folder = tmp_path / "models/pretrained/hf"
    meta = json.loads((tmp_path / "models/pretrained/meta.json").read_text())
    assert meta["enabled"] and meta["hf"]["name_or_path"] == str(bert) and meta["steps"] == 12
    metrics = json.loads((tmp_path / "metrics/pretrain.json").read_text())
    assert metrics["val_mlm_accuracy"] is not None and metrics["val_loss"] > 0
    # The weights moved away from the published checkpoint ...
    before = AutoModelForMaskedLM.from_pretrained(bert).state_dict()
    after = AutoModelForMaskedLM.from_pretrained(folder).state_dict()
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(before[key], after[key])
    # ... and finetuning started from them: its run names the folder, and its weights (moved by
    # a learning rate of 1e-9 only) are the continued ones, not the hub's.
    finetuned = finished_run(tmp_path, "finetune")
    assert finetuned.data.tags["lmforge.pretrained"] == "true"
    assert tmp_path / finetuned.data.tags["lmforge.pretrain_checkpoint"] == folder
    from transformers import AutoModelForSequenceClassification

    tuned = AutoModelForSequenceClassification.from_pretrained(tmp_path / "models/finetuned/hf").state_dict()
    assert torch.allclose(tuned[key], after[key], atol=1e-6)
    assert not torch.allclose(tuned[key], before[key], atol=1e-6)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    pretrain_run = finished_run(tmp_path, "pretrain")
    assert [m.step for m in client.get_metric_history(pretrain_run.info.run_id, "val/loss")]
    report = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert 0.0 <= report["f1"] <= 1.0


def test_continued_pretraining_fits_the_checkpoint_objective(bert, tmp_path) -> None:
    """A decoder continues by next-token prediction, an encoder by masked LM; the wrong pairing
    (or an encoder-decoder) is refused in one line that names the objective to use."""
    import torch

    from lmforge.data.masking import next_token_targets
    from lmforge.models.hf import Checkpoint, HFLanguageModel

    gpt2 = save_gpt2(tmp_path / "gpt2")
    decoder = HFLanguageModel.pretrained(Checkpoint(str(gpt2)), "clm")
    assert decoder.is_causal()
    decoder.eval()  # no dropout: the two losses below see the same network
    batch = torch.randint(1, 300, (2, 16))
    inputs, positions, targets = next_token_targets(batch)
    loss, logits = decoder(inputs, positions, targets)
    assert logits.shape == (2 * 15, decoder.hf.config.vocab_size)
    expected = decoder.hf(input_ids=batch, labels=batch).loss  # transformers shifts the labels itself
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)

    encoder = HFLanguageModel.pretrained(Checkpoint(str(bert)), "mlm")
    assert not encoder.is_causal()
    with pytest.raises(UserError, match="pretrain=mlm"):
        HFLanguageModel.pretrained(Checkpoint(str(bert)), "clm")
    with pytest.raises(UserError, match="pretrain=clm"):
        HFLanguageModel.pretrained(Checkpoint(str(gpt2)), "mlm")
    with pytest.raises(UserError, match="encoder-decoder"):
        HFLanguageModel.pretrained(Checkpoint(str(save_t5(tmp_path / "t5"))), "clm")


def test_finetune_refuses_a_pretrained_folder_of_another_model(tmp_path) -> None:
    from lmforge.lit.workspace import hf_checkpoint

    cfg = tiny_config(tmp_path, "model=hf", "model.name_or_path=/models/a", "pretrain=continued")
    folder = tmp_path / cfg.paths.pretrained
    folder.mkdir(parents=True)
    with working_dir(tmp_path):
        (folder / "meta.json").write_text(json.dumps({"enabled": False}))
        assert hf_checkpoint(cfg)[0].name_or_path == "/models/a"  # pretraining was skipped
        (folder / "meta.json").write_text(json.dumps({"enabled": True, "hf": {"name_or_path": "/models/b"}}))
        with pytest.raises(UserError, match="holds model.name_or_path=/models/b"):
            hf_checkpoint(cfg)
        (folder / "meta.json").write_text(json.dumps({"enabled": True, "hf": {"name_or_path": "/models/a"}}))
        (folder / "hf").mkdir()
        (folder / "hf" / "config.json").write_text("{}")
        assert hf_checkpoint(cfg)[0].name_or_path == str(Path(cfg.paths.pretrained) / "hf")
        assert hf_checkpoint(cfg, start=False)[0].name_or_path == "/models/a"


def test_two_copies_of_the_import_guard_do_not_ask_each_other_for_ever() -> None:
    """A project made from this template holds its own copy of the guard; with both packages on
    the path (Hydra imports every hydra_plugins module, the template's too) both are installed."""
    code = (
        "import importlib.util, sys\n"
        "import lmforge.core.import_guard as ours\n"
        "spec = importlib.util.spec_from_file_location('other_guard', ours.__file__)\n"
        "other = importlib.util.module_from_spec(spec); spec.loader.exec_module(other)\n"
        "sys.meta_path.insert(0, other._Finder())\n"
        "ours.install(); other.install()\n"
        "print(sum(getattr(f, 'guards_transformers', False) for f in sys.meta_path))\n"
        "print(importlib.util.find_spec('transformers') is not None)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    env.pop("LMFORGE_TORCHMETRICS_TRANSFORMERS", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    guards, found = done.stdout.split()
    assert guards == "2" and found in ("True", "False")
