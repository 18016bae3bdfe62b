"""``python -m lmforge.export``: lmforge models as Hugging Face folders that ``transformers`` loads
without custom code and that give lmforge's logits and predictions. Tiny random models saved
the way the stages save them, CPU, offline."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip(
    "transformers", reason="export needs the optional extra: pip install -e '.[hf]' (CI installs it)"
)

import torch  # noqa: E402

from lmforge.core.config import (  # noqa: E402
    CleanConfig,
    Config,
    FinetuneConfig,
    GenerateConfig,
    TokenizerConfig,
    task_config,
)
from lmforge.core.errors import UserError  # noqa: E402
from lmforge.export import export, main  # noqa: E402
from lmforge.models.decoder import PrefixLM  # noqa: E402
from lmforge.models.tagger import TokenTagger  # noqa: E402
from lmforge.models.transformer import MaskedLM, SequenceClassifier, TransformerConfig  # noqa: E402

CORPUS = [
    "Create a new event loop and run the coroutine until it completes.",
    "Return the widget's current configuration as a dictionary.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Parse the command line and print a one-line error on bad input.",
    "Open the file, read every line and close it when done.",
]
TEXTS = [
    "Run the loop until the widget completes.",
    "  the   quick\tfox reads a line\x07 ",  # whitespace runs and a control character
    "Return a dictionary of every configuration line in the file, then close the file.",
    "Parse it.",
]
LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lmforge.data.tokenization import train_tokenizer

    tokenizer = train_tokenizer(CORPUS * 20, TokenizerConfig(kind="bpe", vocab_size=320, min_frequency=1))
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def tiny_cfg(vocab_size: int, **overrides: object) -> TransformerConfig:
    sizes: dict = dict(d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=48, dropout=0.1, norm_eps=1e-5)
    return TransformerConfig(vocab_size=vocab_size, **{**sizes, **overrides})


def peaked(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights far from GPT-2's near-uniform init, so argmax (labels, greedy tokens) is
    decided by clear margins rather than rounding, and LayerNorm/bias parameters are not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
            if name.endswith(("head_norm.weight", "classifier.weight", "head.weight")):
                p.mul_(8.0)  # logits spread over several units, not a few tenths
    return model.eval()


def vocab_size(tokenizer_path: Path) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_path)).get_vocab_size()


def finetuned_folder(
    tmp_path: Path, tokenizer_path: Path, task_name: str, module: torch.nn.Module, **cfg: object
) -> Path:
    """A models/finetuned folder written by the task's own ``save`` (what the finetune stage does)."""
    from lmforge.core.task_registry import get_task

    folder = tmp_path / "finetuned"
    folder.mkdir()
    meta = {"labels": LABELS, "tagging": {"tags": LABELS}}
    get_task(task_name).save(SimpleNamespace(model=module), Config(**cfg), meta, folder)  # type: ignore[arg-type]
    (folder / "tokenizer.json").write_bytes(tokenizer_path.read_bytes())
    return folder


def pretrained_folder(tmp_path: Path, tokenizer_path: Path, model: torch.nn.Module) -> Path:
    """A models/pretrained folder with the files the pretrain stage writes."""
    folder = tmp_path / "pretrained"
    folder.mkdir()
    torch.save(model.encoder.state_dict(), folder / "encoder.pt")
    torch.save(model.state_dict(), folder / "lm.pt")
    (folder / "tokenizer.json").write_bytes(tokenizer_path.read_bytes())
    (folder / "config.json").write_text(json.dumps(asdict(model.cfg)))
    (folder / "meta.json").write_text(json.dumps({"enabled": True}))
    return folder


def lmforge_batch(folder: Path, texts: list[str], max_len: int) -> dict:
    """lmforge's own encoding of raw texts (the evaluate stage's file path)."""
    from tokenizers import Tokenizer

    from lmforge.data.cleaning import normalize_text
    from lmforge.data.tokenization import special_ids
    from lmforge.tasks.classification.scoring import file_batches

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    records = [{"text": normalize_text(t, CleanConfig()), "label": 0} for t in texts]
    return next(file_batches(records, tokenizer, {"0": 0}, max_len, len(texts), special_ids()))


# --------------------------------------------------------------------------- logits


def test_classifier_export_gives_lmforge_logits(tmp_path: Path, tokenizer_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerFast

    from lmforge.tasks.classification.scoring import load_classifier

    torch.manual_seed(0)
    classifier = peaked(SequenceClassifier(tiny_cfg(vocab_size(tokenizer_path)), len(LABELS), pooling="cls"))
    folder = finetuned_folder(
        tmp_path,
        tokenizer_path,
        "classification",
        classifier,
        finetune=FinetuneConfig(pooling="cls", max_len=24),
    )
    out = tmp_path / "hf"
    export(folder, out)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()
    }
    hf_model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(out)
    assert isinstance(hf_tokenizer, PreTrainedTokenizerFast)
    tokenizer_class = json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"]
    assert tokenizer_class == "PreTrainedTokenizerFast"
    assert type(hf_model).__name__ == "MegatronBertForSequenceClassification"
    assert hf_model.config.id2label == dict(enumerate(LABELS))

    model, _, _, max_len = load_classifier(folder)
    ours = lmforge_batch(folder, TEXTS, max_len)
    theirs = hf_tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
    # Same ids: cleaning, [CLS] ... [SEP] framing and truncation to finetune.max_len (24) alike.
    assert torch.equal(theirs["input_ids"], ours["input_ids"])
    assert torch.equal(theirs["attention_mask"].bool(), ours["attention_mask"])
    with torch.no_grad():
        expected = model(ours["input_ids"], ours["attention_mask"])
        got = hf_model(**theirs).logits
    assert expected.abs().max() > 1.0  # not a degenerate model whose logits all sit near 0
    assert (got - expected).abs().max() <= 1e-4


def test_mean_pooled_classifier_exports_as_token_logits(tmp_path: Path, tokenizer_path: Path) -> None:
    """The default classifier (finetune.pooling=mean) has no built-in sequence-classification
    twin; --token-logits exports per-token logits whose mean over the real tokens is lmforge's."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from lmforge.tasks.classification.scoring import load_classifier

    torch.manual_seed(7)
    classifier = peaked(SequenceClassifier(tiny_cfg(vocab_size(tokenizer_path)), len(LABELS)), seed=7)
    assert classifier.pooling == "mean"
    folder = finetuned_folder(tmp_path, tokenizer_path, "classification", classifier)
    out = tmp_path / "hf"
    assert main([str(folder), str(out), "--token-logits"]) == 0
    hf_model = AutoModelForTokenClassification.from_pretrained(out).eval()
    model, _, _, max_len = load_classifier(folder)
    batch = AutoTokenizer.from_pretrained(out)(TEXTS, padding=True, truncation=True, return_tensors="pt")
    mask = batch["attention_mask"].unsqueeze(-1).float()
    with torch.no_grad():
        got = (hf_model(**batch).logits * mask).sum(1) / mask.sum(1)
        ours = lmforge_batch(folder, TEXTS, max_len)
        expected = model(ours["input_ids"], ours["attention_mask"])
    assert hf_model.config.id2label == dict(enumerate(LABELS))
    assert expected.abs().max() > 1.0
    assert (got - expected).abs().max() <= 1e-4


@pytest.mark.parametrize("causal", [True, False], ids=["clm", "mlm"])
def test_pretrained_lm_export_gives_lmforge_logits(
    tmp_path: Path, tokenizer_path: Path, causal: bool
) -> None:
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    torch.manual_seed(1)
    cfg = tiny_cfg(vocab_size(tokenizer_path), causal=causal)
    lm = peaked(MaskedLM(cfg), seed=1)  # the pretrain stage's model; clm only changes attention
    out = tmp_path / "hf"
    export(pretrained_folder(tmp_path, tokenizer_path, lm), out)
    auto = AutoModelForCausalLM if causal else AutoModelForMaskedLM
    hf_model = auto.from_pretrained(out).eval()
    batch = AutoTokenizer.from_pretrained(out)(TEXTS, padding=True, return_tensors="pt")
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        got = hf_model(**batch).logits
        if causal:
            expected = PrefixLM.from_masked_lm(lm).eval()(batch["input_ids"], mask)
        else:
            hidden = lm.encoder(batch["input_ids"], mask)
            expected = lm.decoder(lm.head_norm(torch.nn.functional.gelu(lm.head_dense(hidden))))
    assert expected[mask].std() > 1.0
    assert (got[mask] - expected[mask]).abs().max() <= 1e-4


def test_electra_encoder_export_gives_lmforge_hidden_states(tmp_path: Path, tokenizer_path: Path) -> None:
    """ELECTRA pretraining keeps the discriminator's encoder only (no lm.pt): it becomes the
    bare model, whose last hidden states are the encoder's."""
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(5)
    lm = peaked(MaskedLM(tiny_cfg(vocab_size(tokenizer_path))), seed=5)
    folder = pretrained_folder(tmp_path, tokenizer_path, lm)
    (folder / "lm.pt").unlink()
    out = tmp_path / "hf"
    export(folder, out)
    hf_model = AutoModel.from_pretrained(out).eval()
    batch = AutoTokenizer.from_pretrained(out)(TEXTS, padding=True, return_tensors="pt")
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = lm.encoder(batch["input_ids"], mask)
        got = hf_model(**batch).last_hidden_state
    assert (got[mask] - expected[mask]).abs().max() <= 1e-4


def test_tagger_export_gives_lmforge_logits(tmp_path: Path, tokenizer_path: Path) -> None:
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    torch.manual_seed(2)
    tagger = peaked(TokenTagger(tiny_cfg(vocab_size(tokenizer_path)), len(LABELS)), seed=2)
    folder = finetuned_folder(tmp_path, tokenizer_path, "tagging", tagger, task=task_config("tagging"))
    out = tmp_path / "hf"
    export(folder, out)
    hf_model = AutoModelForTokenClassification.from_pretrained(out).eval()
    batch = AutoTokenizer.from_pretrained(out)(TEXTS, padding=True, return_tensors="pt")
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = tagger(batch["input_ids"], mask)
        got = hf_model(**batch).logits
    assert (got[mask] - expected[mask]).abs().max() <= 1e-4


# --------------------------------------------------------------------------- pipelines


def test_text_classification_pipeline_predicts_as_lmforge(tmp_path: Path, tokenizer_path: Path) -> None:
    from transformers import pipeline

    from lmforge.tasks.classification.scoring import load_classifier

    torch.manual_seed(6)  # a seed whose random classifier does not give every text one label
    classifier = peaked(
        SequenceClassifier(tiny_cfg(vocab_size(tokenizer_path)), len(LABELS), pooling="cls"), 6
    )
    folder = finetuned_folder(
        tmp_path,
        tokenizer_path,
        "classification",
        classifier,
        finetune=FinetuneConfig(pooling="cls", max_len=24),
    )
    out = tmp_path / "hf"
    assert main([str(folder), str(out)]) == 0
    model, labels, _, max_len = load_classifier(folder)
    batch = lmforge_batch(folder, TEXTS, max_len)
    with torch.no_grad():
        probs = torch.softmax(model(batch["input_ids"], batch["attention_mask"]), dim=-1)
    classify = pipeline("text-classification", model=str(out), device="cpu")
    results = classify(TEXTS, top_k=None, truncation=True)
    for row, scores in zip(probs.tolist(), results, strict=True):
        by_label = {r["label"]: r["score"] for r in scores}
        assert max(by_label, key=by_label.__getitem__) == labels[max(range(len(row)), key=row.__getitem__)]
        for name, p in zip(labels, row, strict=True):
            assert by_label[name] == pytest.approx(p, abs=1e-4)
    assert len({max(r, key=lambda x: x["score"])["label"] for r in results}) > 1  # not one constant label


@pytest.mark.parametrize("kind", ["pretrained_clm", "text2text_causal"])
def test_text_generation_pipeline_generates_as_lmforge(
    tmp_path: Path, tokenizer_path: Path, kind: str
) -> None:
    from tokenizers import Tokenizer
    from transformers import pipeline

    from lmforge.data.tokenization import special_ids
    from lmforge.tasks.text2text.runtime import TextToTextModel

    torch.manual_seed(4)
    cfg = tiny_cfg(vocab_size(tokenizer_path), causal=True, max_len=96)  # room for prompt + 8 tokens
    lm = peaked(PrefixLM(cfg), seed=4)
    with torch.no_grad():  # [SEP] likelier, so some rows end early and the stopping rule is compared too
        lm.decoder.bias[special_ids()["sep"]] += 15.0
    if kind == "pretrained_clm":
        folder = pretrained_folder(tmp_path, tokenizer_path, lm)
    else:
        folder = finetuned_folder(
            tmp_path, tokenizer_path, "text2text", lm, task=task_config("text2text", prefix_lm=False)
        )
    out = tmp_path / "hf"
    export(folder, out)
    options = GenerateConfig(strategy="greedy", max_new_tokens=8)
    ours = TextToTextModel.load(folder, clean=CleanConfig()).generate(TEXTS, options)
    generate = pipeline("text-generation", model=str(out), device="cpu")
    decode = Tokenizer.from_file(str(folder / "tokenizer.json")).decode
    sep = special_ids()["sep"]
    for text, expected_text, expected_count in zip(TEXTS, ours.texts, ours.tokens, strict=True):
        prompt_len = len(generate.tokenizer(text)["input_ids"])
        result = generate(text, max_new_tokens=8, do_sample=False, return_tensors=True)[0]
        new = result["generated_token_ids"][prompt_len:]
        new = new[:-1] if new and new[-1] == sep else new  # lmforge counts tokens before [SEP]
        assert len(new) == expected_count
        assert decode(new).strip() == expected_text
    assert len(set(ours.tokens)) > 1  # rows stop at different steps: [SEP] and max_new_tokens

    # A batch of prompts of unequal lengths, left-padded as decoder-only generation wants.
    tokenizer = generate.tokenizer
    tokenizer.padding_side = "left"
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    rows = generate.model.generate(**batch, max_new_tokens=8, do_sample=False)[
        :, batch["input_ids"].shape[1] :
    ]
    for row, expected_text, expected_count in zip(rows.tolist(), ours.texts, ours.tokens, strict=True):
        new = row[: row.index(sep)] if sep in row else row
        assert len(new) == expected_count
        assert decode(new).strip() == expected_text


# --------------------------------------------------------------------------- refusals


def test_missing_or_unexportable_folders_fail_in_one_line(
    tmp_path: Path, tokenizer_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(UserError, match="no such folder"):
        export(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="config.json is missing"):
        export(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "off").mkdir()
    (tmp_path / "off" / "meta.json").write_text('{"enabled": false}')
    with pytest.raises(UserError, match="pretrain.enabled=false"):
        export(tmp_path / "off", tmp_path / "out")

    size = vocab_size(tokenizer_path)
    mean_pooled = finetuned_folder(
        tmp_path, tokenizer_path, "classification", SequenceClassifier(tiny_cfg(size), 3, pooling="mean")
    )
    assert main([str(mean_pooled), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lmforge: error: ")
    assert "finetune.pooling=cls" in err and "--token-logits" in err
    assert not (tmp_path / "out").exists()

    for name, module, cfg in (
        (
            "tagging",
            TokenTagger(tiny_cfg(size), 3, feature_buckets=64),
            {"task": task_config("tagging", word_feature_buckets=64)},
        ),
        ("text2text", PrefixLM(tiny_cfg(size)), {"task": task_config("text2text", prefix_lm=True)}),
    ):
        (tmp_path / name).mkdir()
        folder = finetuned_folder(tmp_path / name, tokenizer_path, name, module, **cfg)
        with pytest.raises(UserError, match="to export it") as info:
            export(folder, tmp_path / "out")
        assert "\n" not in str(info.value)

    with pytest.raises(UserError, match="not empty"):
        export(mean_pooled, tmp_path / "tagging")
    with pytest.raises(UserError, match="would overwrite the model folder"):
        export(mean_pooled, mean_pooled / "hf", overwrite=True)


def test_help_and_import_stay_light() -> None:
    """``--help`` answers without importing torch or transformers."""
    code = (
        "import sys, lmforge.export as e\n"
        "try:\n    e.main(['--help'])\nexcept SystemExit as x:\n    assert x.code == 0\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Hugging Face" in done.stdout
