"""Export an lmforge model as a Hugging Face folder: ``python -m lmforge.export``.

    python -m lmforge.export models/finetuned models/hf           # a finetuned classifier, ...
    python -m lmforge.export models/pretrained models/hf-lm       # a pretrained (causal) LM

The folder (``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``,
``generation_config.json`` for a language model) loads with ``AutoModelFor*.from_pretrained`` and
``AutoTokenizer.from_pretrained`` without ``trust_remote_code``, and gives lmforge's logits.

The architecture is Megatron-BERT (``model_type: megatron-bert``), the built-in whose layout is
exactly ours: pre-LN blocks, no LayerNorm on the embeddings, a final LayerNorm, learned absolute
positions, exact GELU, and BERT's LM head (dense, GELU, LayerNorm, tied decoder with a bias),
which our causal and masked LMs share. GPT-2 is pre-LN too but has no such head (its LM head is
the bare tied embedding, no bias), so it cannot reproduce our language models' logits.

What maps to what (docs/huggingface.md, "Export to Hugging Face"):

- classifier (``finetune.pooling=cls``) -> ``MegatronBertForSequenceClassification``. Its pooler
  (dense + tanh on the first token) becomes an identity to float32 precision: dense = ``s * I``
  with ``s`` small enough that ``tanh`` is linear on every hidden state the final LayerNorm can
  produce, and the classifier's weights divided by ``s``.
- classifier (``pooling=mean``, the default) -> refused: no built-in sequence classifier averages
  the hidden states over the real tokens before a linear head. With ``--token-logits``:
  ``MegatronBertForTokenClassification``, whose per-token logits averaged over the real tokens
  are ours exactly (the head is linear, so averaging before or after it is the same).
- tagger without word features -> ``MegatronBertForTokenClassification`` (word features have no
  built-in equivalent: refused).
- text-to-text model with ``task.prefix_lm=false`` -> ``MegatronBertForCausalLM`` reading
  ``[CLS] source [SEP]`` (with ``prefix_lm=true`` the source attends both ways, which no built-in
  decoder-only model does: refused).
- pretrained folder -> ``MegatronBertForCausalLM`` (``pretrain=clm``), ``MegatronBertForMaskedLM``
  (``mlm``) or ``MegatronBertModel`` (``electra``: the encoder only).

torch and transformers are imported inside functions: ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lmforge.core.errors import UserError
from lmforge.data.pairing import check_model_folder
from lmforge.models.export_plan import Target, plan


def hf_tokenizer(
    folder: Path, template: list[str], max_len: int, normalization: str = "NFKC", lowercase: bool = False
) -> Any:
    """Our ``tokenizer.json`` as a ``PreTrainedTokenizerFast`` that encodes a raw text as lmforge
    does: the text cleaned as ``data.clean`` cleans it, then framed by ``template``."""
    from tokenizers import Regex, Tokenizer, normalizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    from lmforge.data.cleaning import _CONTROL
    from lmforge.data.tokenization import SPECIAL_TOKENS

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    # lmforge.data.cleaning.normalize_text, as normalizers, before the tokenizer's own.
    cleaning: list[Any] = [
        normalizers.Replace(Regex(_CONTROL.pattern), ""),
        normalizers.Replace(Regex(r"\s+"), " "),
        normalizers.Strip(),
    ]
    if normalization != "none":
        cleaning.insert(0, getattr(normalizers, normalization)())
    if lowercase:
        cleaning.append(normalizers.Lowercase())
    if tokenizer.normalizer is not None:
        cleaning.append(tokenizer.normalizer)
    tokenizer.normalizer = normalizers.Sequence(cleaning)
    specials = [(token, tokenizer.token_to_id(token)) for token in SPECIAL_TOKENS]
    tokenizer.post_processor = TemplateProcessing(
        single=template, special_tokens=[(t, i) for t, i in specials if t in template]
    )
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        bos_token="[CLS]",
        eos_token="[SEP]",
        model_max_length=max_len,
        padding_side="right",
    )


def export(
    folder: Path,
    out: Path,
    *,
    normalization: str = "NFKC",
    lowercase: bool = False,
    overwrite: bool = False,
    token_logits: bool = False,
) -> Target:
    """Write ``folder`` (an lmforge model) to ``out`` as a Hugging Face folder; return the plan."""
    from lmforge.core.io import atomic_dir

    out = Path(out)
    if out.resolve() == Path(folder).resolve() or Path(folder).resolve() in out.resolve().parents:
        raise UserError(f"{out} would overwrite the model folder {folder}; write the export elsewhere")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} exists and is not empty; pick another output folder or pass --overwrite")
    # Its tokenizer copy is the one it was trained with (a folder that records none: unchecked).
    check_model_folder(Path(folder), "pretrain" if (Path(folder) / "encoder.pt").is_file() else "finetune")
    target = plan(folder, token_logits)  # before importing transformers (seconds): a refusal answers at once
    try:
        import transformers
    except ImportError:
        raise UserError("export needs transformers: pip install -e '.[hf]'") from None

    config = transformers.AutoConfig.for_model(**target.config)
    config.architectures = [target.architecture]
    model = getattr(transformers, target.architecture)(config)
    missing, unexpected = model.load_state_dict(target.state_dict, strict=False)
    # Tied weights (the LM decoder) come from the embeddings; nothing else may be left out.
    missing = [name for name in missing if not name.startswith("cls.predictions.decoder.")]
    if missing or unexpected:
        raise RuntimeError(f"export mapping is incomplete: missing {missing}, unexpected {unexpected}")
    model.eval()
    if target.generation:
        model.generation_config = transformers.GenerationConfig(**target.generation)
    tokenizer = hf_tokenizer(Path(folder), target.template, target.max_len, normalization, lowercase)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # transformers 5 writes its own class name, TokenizersBackend; PreTrainedTokenizerFast is
        # the name both 4.x and 5.x resolve (an alias of it in 5.x).
        tokenizer_config = tmp / "tokenizer_config.json"
        settings = json.loads(tokenizer_config.read_text())
        settings["tokenizer_class"] = "PreTrainedTokenizerFast"
        tokenizer_config.write_text(json.dumps(settings, indent=2) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lmforge.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model", type=Path, help="an lmforge model folder (models/finetuned, models/pretrained)"
    )
    parser.add_argument("output", type=Path, help="the Hugging Face folder to write")
    parser.add_argument(
        "--normalization",
        default="NFKC",
        choices=["NFC", "NFKC", "NFD", "NFKD", "none"],
        help="data.clean.normalization the model was trained with (default: NFKC)",
    )
    parser.add_argument(
        "--lowercase", action="store_true", help="the model was trained with data.clean.lowercase=true"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument(
        "--token-logits",
        action="store_true",
        help="a mean-pooled classifier: export a token classifier whose logits, averaged over the "
        "real tokens, are the classifier's (docs/huggingface.md: Export to Hugging Face)",
    )
    args = parser.parse_args(argv)
    try:
        target = export(
            args.model,
            args.output,
            normalization=args.normalization,
            lowercase=args.lowercase,
            overwrite=args.overwrite,
            token_logits=args.token_logits,
        )
    except UserError as exc:
        print(f"lmforge: error: {exc}", file=sys.stderr)
        return 2
    print(f"export: {args.model} -> {args.output} ({target.architecture}, model_type megatron-bert)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
