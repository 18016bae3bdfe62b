"""Retrieval-augmented text-to-text (``task.retrieval``) and the TF-IDF neighbours behind it and
behind the retrieval baseline: a training source never retrieves itself, evaluation sources
retrieve from the train split only, and every reader of a finetuned model (evaluate, generate,
the registered pyfunc model) frames a source exactly as the tokenize stage framed it for
training."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lmforge.core.errors import UserError
from lmforge.core.io import read_jsonl
from lmforge.data.retrieval import SEPARATOR, NearestPairs
from test_pipeline import tiny_config, working_dir

MODEL = "lmforge-test-retrieval"

TRAIN = [
    ("the red dog runs in the park", "a dog runs"),
    ("the red dog runs in the big park", "a dog runs far"),
    ("a blue cat sleeps on the warm mat", "a cat sleeps"),
    ("a blue cat sleeps on the mat", "a cat naps"),
    ("the green bird sings in the tree", "a bird sings"),
]


def test_a_query_finds_its_most_similar_training_source() -> None:
    index = NearestPairs(*zip(*TRAIN, strict=True))
    assert index.nearest(["the red dog runs in the park today"]) == [0]
    assert index.nearest_targets(["a blue cat sleeps on the warm mat"]) == ["a cat sleeps"]
    assert index.augment(["a bird sings in a green tree"]) == [
        f"a bird sings{SEPARATOR}a bird sings in a green tree"
    ]


def test_leave_one_out_never_returns_the_source_itself() -> None:
    sources = [s for s, _ in TRAIN]
    index = NearestPairs(sources, [t for _, t in TRAIN])
    found = index.nearest(sources, leave_one_out=True, chunk=2)  # chunks: the offset is kept
    assert all(i != row for row, i in enumerate(found))
    assert found[:4] == [1, 0, 3, 2]  # each one's near twin
    assert index.nearest(sources) == [0, 1, 2, 3, 4]  # without it, each finds itself
    with pytest.raises(ValueError, match="training sources"):
        index.nearest(sources[:2], leave_one_out=True)
    with pytest.raises(UserError, match="at least two"):
        NearestPairs(["only one"], ["pair"]).nearest(["only one"], leave_one_out=True)
    with pytest.raises(UserError, match="train split is empty"):
        NearestPairs([], [])


def test_retrieval_is_for_lmforge_text_to_text_only(tmp_path) -> None:
    with pytest.raises(UserError, match="task.retrieval"):
        # The tiny experiment classifies: task.retrieval is no key of its task.
        tiny_config(tmp_path, "+task.retrieval=true")


# A toy summarization: a long description whose summary names its topic; similar descriptions
# share summaries, so the neighbour's target is informative (and sometimes exactly right).
TOPICS = {
    "dog": ["bark", "fetch", "leash", "tail", "puppy"],
    "cat": ["purr", "whisker", "litter", "claw", "kitten"],
    "car": ["engine", "wheel", "brake", "fuel", "garage"],
    "boat": ["sail", "harbor", "anchor", "deck", "wave"],
}


def documents(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = rng.choice(sorted(TOPICS))
        words = rng.choices(TOPICS[topic], k=rng.randint(6, 12))
        rows.append((f"note {seed}-{i}: " + " ".join(words) + ".", f"About the {topic}."))
    return rows


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from lmforge import baselines, collect, evaluate, finetune, prepare, pretrain, tokenize

    workdir = tmp_path_factory.mktemp("retrieval")
    rows = documents(240, 0)
    data = workdir / "docs.jsonl"
    data.write_text("".join(json.dumps({"body": s, "summary": t}) + "\n" for s, t in rows))
    (workdir / "conf").symlink_to(Path(__file__).resolve().parents[1] / "conf")
    overrides = [
        "task=text2text",
        "task.retrieval=true",
        "pretrain.enabled=false",
        "data.source.kind=local",
        f"data.source.path={data}",
        "data.source.text_columns=[body]",
        "data.source.target_column=summary",
        "data.clean.min_chars=1",
        "task.max_source_len=40",
        "task.max_target_len=8",
        "generate.max_new_tokens=8",
        "finetune.max_epochs=1",
        f"logger.registered_model={MODEL}",
    ]
    cfg = tiny_config(workdir, *overrides)
    with working_dir(workdir):
        for stage in (collect, prepare, tokenize, pretrain, finetune, evaluate, baselines):
            stage.run(cfg)
    return workdir, cfg, overrides


def decoded_sources(workdir: Path, split: str) -> list[str]:
    from tokenizers import Tokenizer

    from lmforge.data.tokenization import TokenShards

    tokenizer = Tokenizer.from_file(str(workdir / "data/tokenizer/tokenizer.json"))
    shards = TokenShards(workdir / "data/shards", split)
    return [tokenizer.decode(shards.record(i).tolist()).strip() for i in range(len(shards))]


def test_train_sources_carry_another_pairs_target_and_test_sources_a_train_target(pipeline) -> None:
    workdir, _, _ = pipeline
    prepared = {
        split: list(read_jsonl(workdir / f"data/prepared/{split}.jsonl"))
        for split in ("train", "val", "test")
    }
    index = NearestPairs([r["text"] for r in prepared["train"]], [r["target"] for r in prepared["train"]])
    train_targets = {r["target"] for r in prepared["train"]}
    for split in ("train", "val", "test"):
        sources = decoded_sources(workdir, split)
        records = prepared[split]
        assert len(sources) == len(records) > 0
        found = index.nearest([r["text"] for r in records], leave_one_out=split == "train")
        for source, record, i in zip(sources, records, found, strict=True):
            neighbour, _, text = source.partition(SEPARATOR.strip())
            assert neighbour.strip() == index.targets[i] and neighbour.strip() in train_targets
            assert text.strip() == record["text"]
        if split == "train":
            assert all(i != row for row, i in enumerate(found))


def test_the_model_folder_holds_the_train_pairs_and_reads_sources_as_training_did(pipeline) -> None:
    from lmforge.tasks.text2text.runtime import TextToTextModel

    workdir, cfg, _ = pipeline
    folder = workdir / "models/finetuned"
    pairs = json.loads((folder / "retrieval.json").read_text())
    train = list(read_jsonl(workdir / "data/prepared/train.jsonl"))
    assert pairs == {"sources": [r["text"] for r in train], "targets": [r["target"] for r in train]}
    assert json.loads((folder / "config.json").read_text())["retrieval"] is True
    model = TextToTextModel.load(folder, clean=cfg.data.clean)
    test = list(read_jsonl(workdir / "data/prepared/test.jsonl"))
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    sources = model.source_texts([r["text"] for r in test])
    framed = [
        tokenizer.decode(e.ids).strip() for e in tokenizer.encode_batch(sources, add_special_tokens=False)
    ]
    assert framed == decoded_sources(workdir, "test")
    # The baselines stage is unchanged by task.retrieval: it reads the prepared (plain) sources.
    result = json.loads((workdir / "metrics/baselines.json").read_text())
    assert set(result) >= {"lead", "retrieval"} and result["retrieval"]["pairs"] == len(test)
    (folder / "retrieval.json").unlink()
    try:
        with pytest.raises(UserError, match="retrieval.json is missing"):
            TextToTextModel.load(folder)
    finally:
        (folder / "retrieval.json").write_text(json.dumps(pairs))


def test_the_registered_model_retrieves_like_the_loaded_one(pipeline) -> None:
    import mlflow

    from lmforge.tasks.text2text.runtime import TextToTextModel

    workdir, cfg, _ = pipeline
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    (version,) = client.search_model_versions(f"name = '{MODEL}'")
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    served = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version.version}")
    texts = ["note x: bark leash tail puppy fetch bark.", "note y: sail anchor deck wave harbor."]
    loaded = TextToTextModel.load(workdir / "models/finetuned", clean=cfg.data.clean)
    # The served model could only load with retrieval.json among its artifacts (config.json says
    # retrieval); it then frames and decodes exactly as the finetuned folder does.
    assert served.predict(texts)["generated"].tolist() == loaded.generate(texts, cfg.generate).texts


def test_top_gives_the_k_nearest_nearest_first() -> None:
    sources = [s for s, _ in TRAIN]
    index = NearestPairs(sources, [t for _, t in TRAIN])
    indices, similarities = index.top(["the red dog runs in the park today", "a blue cat"], 3, chunk=1)
    assert indices.shape == similarities.shape == (2, 3)
    assert list(indices[0][:2]) == [0, 1] and list(indices[1][:2]) == [3, 2]
    assert all(list(row) == sorted(row, reverse=True) for row in similarities)
    assert 0 < similarities[0][1] < similarities[0][0] <= 1
    # k = 1 is nearest(); k beyond the train split is the whole split; never the row itself.
    assert [int(r[0]) for r in index.top(sources, 1)[0]] == index.nearest(sources)
    assert index.top(["a dog"], 99)[0].shape == (1, 5)
    loo, _ = index.top(sources, 9, leave_one_out=True)
    assert loo.shape == (5, 4) and all(row not in list(found) for row, found in enumerate(loo))


def test_rerank_outputs_the_best_scored_of_the_decoded_text_and_the_neighbours(pipeline) -> None:
    from dataclasses import replace

    import numpy as np
    import torch

    from lmforge.data.prefix_lm import text_to_text_batch
    from lmforge.tasks.text2text.runtime import TextToTextModel

    workdir, cfg, _ = pipeline
    model = TextToTextModel.load(workdir / "models/finetuned", clean=cfg.data.clean)
    texts = [r["text"] for r in read_jsonl(workdir / "data/prepared/test.jsonl")][:12]
    plain = model.generate(texts, cfg.generate)
    k = 4
    for weight in (0.0, 3.0, 1e6):
        options = replace(cfg.generate, rerank=k, rerank_similarity=weight, batch_size=5)
        out = model.generate(texts, options)
        assert out.decoded == plain.texts and len(out.retrieved) == len(texts)
        indices, similarities = model.retrieval.top(texts, k)
        for i, text in enumerate(texts):
            candidates = [plain.texts[i], *(model.retrieval.targets[j] for j in indices[i])]
            bonus = [0.0, *(weight * s for s in similarities[i])]
            # Each candidate scored alone, no padding: the batched scores must agree.
            scores = []
            (source,) = model.source_ids([text])
            for candidate, extra in zip(candidates, bonus, strict=True):
                target = model.tokenizer.encode(candidate, add_special_tokens=False).ids
                target = target[: model.max_target_len]
                batch = text_to_text_batch([source], [target], special=model.special)
                with torch.inference_mode():
                    ll, n = model.model.target_log_likelihood(
                        batch.input_ids, batch.attention_mask, batch.prefix_mask, batch.labels
                    )
                scores.append(float(ll[0]) / int(n[0]) + extra)
            best = int(np.argmax(scores))
            assert max(scores) - scores[candidates.index(out.texts[i])] < 1e-4
            assert out.retrieved[i] == (candidates.index(out.texts[i]) > 0 or best > 0)
        if weight == 1e6:  # the similarity decides: every output is a nearest pair's target
            assert all(out.retrieved)
            assert all(
                similarities[i][list(model.retrieval.targets[j] for j in indices[i]).index(t)]
                == similarities[i][0]
                for i, t in enumerate(out.texts)
            )


def test_rerank_is_reported_beside_what_the_decoder_alone_wrote(pipeline) -> None:
    from dataclasses import replace

    from lmforge.tasks.text2text import score_pairs, summary_line
    from lmforge.tasks.text2text.runtime import TextToTextModel

    workdir, cfg, _ = pipeline
    test = list(read_jsonl(workdir / "data/prepared/test.jsonl"))
    sources, targets = [r["text"] for r in test], [r["target"] for r in test]
    reranked = replace(cfg, generate=replace(cfg.generate, rerank=5, rerank_similarity=1e6))
    with working_dir(workdir):
        plain = score_pairs(cfg, workdir / "models/finetuned", sources, targets)
        report = score_pairs(reranked, workdir / "models/finetuned", sources, targets)
    assert "retrieved_outputs" not in plain and len(plain["_rows"][0]) == 3
    assert report["retrieved_outputs"] == len(test)
    assert report["decoded_rougeL"] == plain["rougeL"] and report["decoding"]["rerank"] == 5
    assert [row[3] for row in report["_rows"]] == [row[2] for row in plain["_rows"]]
    assert {row[4] for row in report["_rows"]} == {"retrieved"}
    assert "outputs are training targets" in summary_line(report)
    # A model without retrieval pairs has nothing to rerank: one clear line.
    model = TextToTextModel.load(workdir / "models/finetuned", clean=cfg.data.clean)
    model.retrieval = None
    with pytest.raises(UserError, match="task.retrieval=true"):
        model.generate(sources[:2], reranked.generate)


def test_generate_says_which_outputs_were_retrieved(pipeline, tmp_path) -> None:
    from lmforge import generate

    workdir, _, overrides = pipeline
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("note x: bark leash tail puppy fetch bark.\nnote y: sail anchor deck wave harbor.\n")
    output = tmp_path / "out.jsonl"
    for rerank, expected in (("0", None), ("3", True)):
        cfg = tiny_config(
            workdir,
            *overrides,
            f"generate.input={inputs}",
            f"generate.output={output}",
            f"generate.rerank={rerank}",
            "generate.rerank_similarity=1000",
        )
        with working_dir(workdir):
            generate.run(cfg)
        rows = list(read_jsonl(output))
        assert [r.get("retrieved") for r in rows] == [expected, expected]
    train_targets = {r["target"] for r in read_jsonl(workdir / "data/prepared/train.jsonl")}
    assert {r["output"] for r in rows} <= train_targets
