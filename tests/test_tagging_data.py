"""Word-tagged data without training: the CoNLL-U, CoNLL, JSONL and parquet readers, each bad
input (one line naming file and line, nothing written), per-word cleaning, the word/subword
alignment (first subwords labelled, -100 elsewhere, windows, the way back to words) and the
entity-span metric against hand-counted spans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.core.config import CleanConfig, SplitConfig
from lmforge.core.errors import UserError
from lmforge.data.cleaning import CleaningReport, clean_and_split
from lmforge.data.readers import read_local
from test_pipeline import tiny_config, working_dir

CONLLU = """# newdoc id = d1
# sent_id = 1
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_
4.1\tit\tit\tPRON\tPRP\t_\t_\t_\t4:obj\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = 2
1\tThanks\tthanks\tNOUN\tNNS\t_\t0\troot\t_\t_
"""

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_conllu_tags_syntactic_words_and_skips_ranges_and_empty_nodes(tmp_path) -> None:
    path = write(tmp_path / "a.conllu", CONLLU)
    first, second = read_local(path)
    # "don't" is the range 2-3: its words "do" and "n't" are tagged; the empty node 4.1 is not
    # a word of the sentence.
    assert first["words"] == ["I", "do", "n't", "know", "."]
    assert first["tags"] == ["PRON", "AUX", "PART", "VERB", "PUNCT"]
    assert first["text"] == "I do n't know ." and first["source"] == f"{path}:1"
    assert second["words"] == ["Thanks"] and second["source"] == f"{path}:12"
    xpos = next(read_local(path, tags_column="xpos"))
    assert xpos["tags"] == ["PRP", "VBP", "RB", "VB", "."]


def test_conll_reads_the_last_column_or_a_given_one(tmp_path) -> None:
    path = write(tmp_path / "ner.conll", CONLL)
    first, second = read_local(path)
    assert first["words"] == ["EU", "rejects", "German", "call"]
    assert first["tags"] == ["B-ORG", "O", "B-MISC", "O"]
    assert first["source"] == f"{path}:3"
    assert second["tags"] == ["B-PER", "I-PER"]
    chunks = next(read_local(path, tags_column="2"))
    assert chunks["tags"] == ["B-NP", "B-VP", "B-NP", "I-NP"]
    # A .txt CoNLL file (CoNLL-2003 ships eng.train) is read by format.
    txt = write(tmp_path / "eng.train.txt", CONLL)
    assert [r["words"] for r in read_local(txt, format="conll")][1] == ["Peter", "Blackburn"]


def test_jsonl_and_parquet_hold_word_and_tag_lists(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"tokens": ["Paris", "is", "nice"], "ner": ["B-LOC", "O", "O"]}, {"tokens": ["Hi"], "ner": ["O"]}]
    jsonl = write(tmp_path / "a.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    records = list(read_local(jsonl, words_column="tokens", tags_column="ner"))
    assert [r["words"] for r in records] == [["Paris", "is", "nice"], ["Hi"]]
    assert records[0]["tags"] == ["B-LOC", "O", "O"] and records[1]["source"] == f"{jsonl}:2"
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    assert [r["tags"] for r in read_local(parquet, words_column="tokens", tags_column="ner")] == [
        ["B-LOC", "O", "O"],
        ["O"],
    ]


def test_hf_rows_with_class_label_tags_become_tag_names(tmp_path) -> None:
    import datasets

    from lmforge.data.sources import read_hf

    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner": datasets.Sequence(datasets.ClassLabel(names=["O", "B-LOC", "I-LOC"])),
        }
    )
    rows = {"tokens": [["New", "York", "!"], ["Hi"]], "ner": [[1, 2, 0], [0]]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(tmp_path / "ds")
    parquet = tmp_path / "ner.parquet"
    datasets.load_from_disk(tmp_path / "ds").to_parquet(parquet)
    records = list(
        read_hf(
            str(parquet),
            split="train",
            words_column="tokens",
            tags_column="ner",
            cache_dir=str(tmp_path / "cache"),
        )
    )
    assert [r["words"] for r in records] == [["New", "York", "!"], ["Hi"]]
    # A parquet export keeps the ClassLabel names in its schema metadata.
    assert records[0]["tags"] == ["B-LOC", "I-LOC", "O"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "columns.conllu",
            "1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\n",
            r"columns.conllu line 1: 9 tab-separated columns, CoNLL-U has 10",
        ),
        (
            "id.conllu",
            "# text = I\nx\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n",
            r"id.conllu line 2: ID 'x' is not an integer",
        ),
        (
            "empty.conllu",
            "1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n\n# sent_id = 2\n# text = \n\n",
            r"empty.conllu line 3: sentence has no tokens",
        ),
        (
            "lengths.jsonl",
            '{"words": ["a", "b"], "tags": ["X", "Y"]}\n{"words": ["a", "b"], "tags": ["X"]}\n',
            r"lengths.jsonl line 2: 'words' has 2 words but 'tags' has 1 tags",
        ),
        (
            "short.conll",
            "EU B-ORG\nrejects\n",
            r"short.conll line 2: 1 column\(s\), expected a word "
            "and a tag",
        ),
        # A CoNLL-2003 line without its NER column: its chunk tag (B-NP) is no entity tag.
        (
            "no_ner.conll",
            "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nGerman JJ B-NP\n",
            r"no_ner.conll line 4: 3 columns where line 1 has 4; the line lacks a column",
        ),
        (
            "boundary.conllu",
            "1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n1\tGo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n",
            r"boundary.conllu line 2: ID 1 starts a new sentence inside the one from line 1 "
            "\\(after word 1\\); a blank line is missing",
        ),
        (
            "order.conllu",
            "1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n",
            r"order.conllu line 2: ID 3 does not follow word 1",
        ),
        (
            "range.conllu",
            "1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n3-4\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n",
            r"range.conllu line 2: ID 3-4 does not follow word 1",
        ),
        (
            "mixed.jsonl",
            '{"words": ["a", "b"], "tags": ["O", 3]}\n',
            r"mixed.jsonl line 1: 'tags' mixes integer and string tags \(item 1 is 3, item 0 'O'\)",
        ),
        (
            "empty_tag.jsonl",
            '{"words": ["a", "b"], "tags": ["O", "O"]}\n{"words": ["a", "b"], "tags": ["O", ""]}\n',
            r"empty_tag.jsonl line 2: 'tags' item 1 is an empty tag ''",
        ),
        (
            "null_tag.jsonl",
            '{"words": ["a", "b"], "tags": [null, "O"]}\n',
            r"null_tag.jsonl line 1: 'tags' item 0 is null",
        ),
        (
            "nested.jsonl",
            '{"words": ["a", ["b"]], "tags": ["O", "O"]}\n',
            r"nested.jsonl line 1: 'words' item 1 is list \['b'\]; items must be strings",
        ),
    ],
)
def test_bad_tagged_input_names_file_and_line_and_writes_nothing(tmp_path, name, text, message) -> None:
    from lmforge import collect

    path = write(tmp_path / name, text)
    options = ["task=tagging", "data.source.kind=local", f"data.source.path={path}"]
    if name.endswith(".jsonl"):
        options.append("data.source.tags_column=tags")
    cfg = tiny_config(tmp_path, *options)
    with working_dir(tmp_path), pytest.raises(UserError, match=message) as error:
        collect.run(cfg)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "data" / "raw").exists()


def test_cleaning_normalises_each_word_and_counts_what_it_drops() -> None:
    records = [
        {"words": ["ﬁne", "Ｔｅｓｔ"], "tags": ["ADJ", "NOUN"], "text": "", "source": "f:1"},
        {"words": ["fine", "Test"], "tags": ["ADJ", "NOUN"], "text": "", "source": "f:2"},
        {"words": ["fine", "Test"], "tags": ["ADJ", "PROPN"], "text": "", "source": "f:3"},
        {"words": [], "tags": [], "text": "", "source": "f:4"},
        {"words": ["a", "\x07"], "tags": ["DET", "X"], "text": "", "source": "f:5"},
        {"words": ["Hi"], "tags": ["INTJ"], "text": "", "source": "f:6"},
    ]
    report = CleaningReport()
    kept = [r for _, r in clean_and_split(records, CleanConfig(min_chars=20), SplitConfig(), report)]
    # NFKC per word: the ligature and the full-width letters become plain; words stay aligned.
    assert [r["words"] for r in kept] == [["fine", "Test"], ["fine", "Test"], ["Hi"]]
    assert [r["tags"] for r in kept] == [["ADJ", "NOUN"], ["ADJ", "PROPN"], ["INTJ"]]
    assert kept[0]["text"] == "fine Test"
    # A one-word sentence is kept although min_chars=20: it does not apply to sentences.
    assert dict(report.dropped) == {"duplicate": 1, "empty": 1, "empty_word": 1}
    report.check_balance()


@pytest.fixture(scope="module")
def tokenizer():
    from lmforge.core.config import TokenizerConfig
    from lmforge.data.tokenization import train_tokenizer

    texts = ["The quick brown fox jumps over the lazy dog .", "Unbelievably , it works ."] * 20
    return train_tokenizer(texts, TokenizerConfig(vocab_size=300, min_frequency=2))


def test_words_map_to_their_first_subword_as_in_running_text(tokenizer) -> None:
    from lmforge.data.tagging import encode_sentences
    from lmforge.data.tokenization import special_ids

    words = ["Unbelievably", ",", "the", "xylophone", "works", ""]
    [(ids, starts)] = encode_sentences(tokenizer, [words], special_ids()["unk"])
    # The same ids as the joined text (the byte-level prefix space is on every word), plus [UNK]
    # for the empty word, which would otherwise have no subword to be tagged at.
    running = tokenizer.encode(" ".join(words[:-1]), add_special_tokens=False).ids
    assert ids.tolist() == [*running, special_ids()["unk"]]
    pieces = [ids[a:b].tolist() for a, b in zip(starts, [*starts[1:], len(ids)], strict=True)]
    for word, piece in zip(words[:-1], pieces, strict=False):
        assert tokenizer.decode(piece).strip() == word
    assert starts[0] == 0 and all(b > a for a, b in zip(starts, starts[1:], strict=False))


def test_first_subwords_carry_the_tags_and_predictions_come_back_per_word(tokenizer) -> None:
    import torch

    from lmforge.data.tagging import (
        CHAR_SLOTS,
        FEATURE_NAMES,
        HASHED_FEATURES,
        IGNORE,
        TagCollate,
        TaggedWindows,
        plain_sentences,
        word_key,
    )
    from lmforge.data.tokenization import special_ids
    from lmforge.tasks.tagging.scoring import predict_words

    special = special_ids()
    sentences = [["Unbelievably", "the", "xylophone", "works", "."], ["Hi", "fox"]]
    tags = [[0, 1, 2, 3, 4], [5, 2]]
    data = TaggedWindows(
        plain_sentences(tokenizer, sentences, special["unk"], tags), 64, special["cls"], special["sep"]
    )
    ids, labels, mask, features = data[0]
    assert ids[0] == special["cls"] and ids[-1] == special["sep"]
    assert labels[mask].tolist() == tags[0]
    assert (labels[~mask] == IGNORE).all()  # later subwords, [CLS], [SEP]
    assert len(ids) > len(sentences[0]) + 2  # some words span several subwords
    hashed = features[..., : len(HASHED_FEATURES)]
    assert (features[~mask] == 0).all() and (hashed[mask] > 0).all()
    # Then each word's characters: "Hi" fills two of the character slots; last, its key.
    row = data[1][3][data[1][2]][0]
    chars = row[len(HASHED_FEATURES) : len(HASHED_FEATURES) + CHAR_SLOTS]
    assert chars[:2].tolist() == [ord("H") + 1, ord("i") + 1] and (chars[2:] == 0).all()
    assert row[-1] == word_key("hi") and len(row) == len(FEATURE_NAMES)

    class Oracle(torch.nn.Module):
        """Scores the gold tag highest at each word: predictions must come back in word order."""

        def forward(self, input_ids, attention_mask, features):
            logits = torch.zeros(*input_ids.shape, 8)
            return logits.scatter(-1, batch["tags"].clamp(min=0)[..., None], 1.0)

    batch = TagCollate(special["pad"])([data[0], data[1]])
    predicted, gold = predict_words(Oracle(), [batch])
    assert predicted == gold == [t for row in tags for t in row]


def test_a_sentence_longer_than_the_context_is_tagged_in_windows(tokenizer) -> None:
    from lmforge.data.tagging import TaggedWindows, plain_sentences, word_windows
    from lmforge.data.tokenization import special_ids

    special = special_ids()
    words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"] * 3
    data = TaggedWindows(
        plain_sentences(tokenizer, [words], special["unk"], [list(range(27))]),
        12,
        special["cls"],
        special["sep"],
    )
    assert len(data) > 1 and data.split_sentences == 1 and data.truncated_words == 0
    seen = []
    for i in range(len(data)):
        ids, labels, mask, _ = data[i]
        assert len(ids) <= 12
        seen += labels[mask].tolist()
    assert seen == list(range(27))  # every word tagged once, in order
    # A word longer than the context keeps its first subwords, and is counted.
    windows, capped = word_windows(__import__("numpy").array([0, 1, 30]), 31, 10)
    assert windows == [(0, 1), (1, 2), (2, 3)] and capped == 1


def test_entity_spans_match_hand_counted_cases() -> None:
    from lmforge.tasks.tagging.spans import entity_spans, is_span_scheme, span_scores

    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    # I- without B- starts a span (conlleval, seqeval's default mode).
    assert entity_spans(["O", "I-PER", "I-PER", "O"]) == [("PER", 1, 2)]
    # A type change inside a span ends it and starts another.
    assert entity_spans(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2)]
    # BIOES: S- is one word, E- closes its span, B- after B- starts a new one.
    assert entity_spans(["S-ORG", "B-PER", "E-PER", "B-LOC", "B-LOC", "E-LOC"]) == [
        ("ORG", 0, 0),
        ("PER", 1, 2),
        ("LOC", 3, 3),
        ("LOC", 4, 5),
    ]
    assert is_span_scheme(["O", "B-PER", "I-PER"]) and not is_span_scheme(["NOUN", "VERB"])
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "S-MISC"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "O", "O"]]
    # Gold spans: PER(0-1), LOC(3), ORG(0), MISC(2) = 4; predicted: PER(0-1), ORG(3), ORG(0) = 3;
    # right: PER(0-1) and ORG(0) (I- without B- starts the span) = 2.
    scores = span_scores(gold, predicted)
    assert (scores["correct"], scores["predicted"], scores["support"]) == (2, 3, 4)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert scores["per_type"]["ORG"] == {
        "precision": 0.5,
        "recall": 1.0,
        "f1": pytest.approx(2 / 3),
        "support": 1,
        "predicted": 2,
        "correct": 1,
    }
    assert scores["per_type"]["MISC"]["recall"] == 0.0


def test_most_frequent_tag_baseline_on_ud_ewt_dev(shared_data_dir, tmp_path) -> None:
    """The shared data's README: each word form's most frequent train tag (unseen forms: NOUN)
    gets 86.13 % of EWT dev (21,659 / 25,147 words). Train duplicates are dropped here, so the
    counts may differ by a few words."""
    from lmforge import baselines, collect, prepare

    (tmp_path / "conf").symlink_to(Path(__file__).resolve().parents[1] / "conf")
    cfg = tiny_config(tmp_path, "experiment=ud_ewt", f"data.source.path={shared_data_dir / 'ud_ewt'}")
    with working_dir(tmp_path):
        for stage in (collect, prepare, baselines):
            stage.run(cfg)
    result = json.loads((tmp_path / "metrics/baselines.json").read_text())
    whole = result["most_frequent_tag_train_and_val"]
    assert whole["words"] == 25147 and whole["unseen_tag"] == "NOUN"
    assert whole["accuracy"] == pytest.approx(0.8613, abs=0.001)
