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

from lmforge.errors import UserError
from lmforge.io import read_jsonl
from lmforge.retrieval import SEPARATOR, NearestPairs
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
        tiny_config(tmp_path, "task.retrieval=true")  # the tiny experiment classifies


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
