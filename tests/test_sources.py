"""Tests for the raw-data sources: stdlib corpus, local files, HF datasets, URLs, dispatcher."""

from __future__ import annotations

import hashlib
import http.server
import inspect
import json
import re
import socket
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lmforge.core.errors import UserError
from lmforge.data.sources import (
    StdlibScan,
    hf_label_names,
    iter_records,
    iter_url,
    normalize_labels,
    read_hf,
    read_local,
    read_stdlib,
    read_url,
    stdlib_module_counts,
)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def user_error(call: Any) -> str:
    """Run ``call`` (consuming a generator) and return the UserError message, checked one-line."""
    with pytest.raises(UserError) as info:
        result = call()
        if inspect.isgenerator(result):
            list(result)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# stdlib


def doc(text: str) -> str:
    return f'"""{text} with enough characters."""'


@pytest.fixture
def fake_stdlib(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    write(
        root / "os.py",
        f"{doc('os module')}\n\ndef getcwd():\n    {doc('os getcwd')}\n\ndef nodoc():\n    pass\n",
    )
    write(root / "email" / "__init__.py", doc("email package"))
    write(
        root / "email" / "mime" / "text.py",
        textwrap.dedent(f"""\
            {doc("email mime text")}
            import sys
            if sys.platform == "win32":
                def windows_only():
                    {doc("email windows only")}
            class MIMEText:
                {doc("email MIMEText")}
                def __init__(self):
                    {doc("email MIMEText init")}
                async def send(self):
                    {doc("email MIMEText send")}
            """),
    )
    write(root / "asyncio" / "tasks.py", f"{doc('asyncio tasks')}\nclass Task:\n    {doc('Task')}\n")
    write(root / "_pydecimal.py", doc("_pydecimal module"))
    write(root / "abc.py", doc("abc module"))
    write(root / "short.py", '"""Too short."""')
    write(root / "broken.py", f"{doc('broken')}\ndef oops(:\n")
    # Importing this would leave a trace; the reader must only parse it.
    sentinel = tmp_path / "imported"
    write(root / "sideeffect.py", f"{doc('side effect')}\nopen({str(sentinel)!r}, 'w').close()\n")
    for excluded in [
        "test/test_os.py",
        "test/support/__init__.py",
        "tests/helper.py",
        "idlelib/idle_test/htest.py",
        "lib2to3/tests/data/bad.py",
        "ctypes/test_thing.py",
        "site-packages/numpy/__init__.py",
        "dist-packages/foo.py",
        "config-3.11-x86_64-linux-gnu/python-config.py",
    ]:
        write(root / excluded, doc(f"EXCLUDED {excluded}"))
    return root


def test_stdlib_labels_top_k_modules_and_skips_tests(fake_stdlib: Path) -> None:
    stats = StdlibScan()
    records = list(read_stdlib(top_k=2, stdlib_dir=fake_stdlib, stats=stats))

    assert all(set(r) == {"text", "label", "source"} for r in records)
    assert not any("EXCLUDED" in r["text"] for r in records)
    assert not (fake_stdlib.parent / "imported").exists()
    assert [r["source"] for r in records] == [
        "_pydecimal",
        "abc",
        "asyncio.tasks",
        "asyncio.tasks:Task",
        "email",
        "email.mime.text",
        "email.mime.text:windows_only",
        "email.mime.text:MIMEText",
        "email.mime.text:MIMEText.__init__",
        "email.mime.text:MIMEText.send",
        "os",
        "os:getcwd",
        "sideeffect",
    ]
    # email has 6 records; asyncio and os tie at 2 and the name breaks the tie.
    labels = {r["source"]: r["label"] for r in records}
    assert labels["email.mime.text:MIMEText"] == "email"
    assert labels["asyncio.tasks:Task"] == "asyncio"
    assert labels["os"] is None and labels["_pydecimal"] is None
    assert records[7]["text"] == "email MIMEText with enough characters."
    assert stats.unparsable == ["broken.py"]
    assert stats.records == len(records) == 13
    assert list(stats.module_counts.items()) == [
        ("email", 6), ("asyncio", 2), ("os", 2), ("_pydecimal", 1), ("abc", 1), ("sideeffect", 1)
    ]  # fmt: skip


def test_stdlib_is_deterministic_and_top_k_bounds(fake_stdlib: Path) -> None:
    first = list(read_stdlib(top_k=3, stdlib_dir=fake_stdlib))
    assert first == list(read_stdlib(top_k=3, stdlib_dir=fake_stdlib))
    assert {r["label"] for r in first} == {"email", "asyncio", "os", None}
    assert {r["label"] for r in read_stdlib(top_k=0, stdlib_dir=fake_stdlib)} == {None}
    every = {r["label"] for r in read_stdlib(top_k=None, stdlib_dir=fake_stdlib)}
    assert every == {"email", "asyncio", "os", "_pydecimal", "abc", "sideeffect"}
    assert len(list(read_stdlib(stdlib_dir=fake_stdlib, min_chars=5))) == 14  # + "Too short."
    assert stdlib_module_counts(fake_stdlib) == {
        "email": 6, "asyncio": 2, "os": 2, "_pydecimal": 1, "abc": 1, "sideeffect": 1
    }  # fmt: skip
    assert "top_k=-1" in user_error(lambda: read_stdlib(top_k=-1, stdlib_dir=fake_stdlib))
    missing = fake_stdlib / "nope"
    assert str(missing) in user_error(lambda: read_stdlib(stdlib_dir=missing))
    nodocs = write(fake_stdlib.parent / "nodocs" / "x.py", "x = 1\n").parent
    assert "no docstrings" in user_error(lambda: read_stdlib(stdlib_dir=nodocs))


def test_real_stdlib_counts_are_sane() -> None:
    stats = StdlibScan()
    start = time.perf_counter()
    labels: Counter[str | None] = Counter()
    sources = set()
    for record in read_stdlib(stats=stats):
        labels[record["label"]] += 1
        sources.add(record["source"].split(":")[0])
    elapsed = time.perf_counter() - start

    assert stats.records > 5000 and len(stats.module_counts) > 100
    top10 = list(stats.module_counts)[:10]
    assert set(labels) - {None} == set(top10)
    assert all(labels[m] == stats.module_counts[m] for m in top10)
    assert {"os", "email.mime.text", "asyncio.tasks", "json"} <= sources
    assert not any(s == "test" or s.startswith("test.") or ".tests" in s for s in sources)
    assert elapsed < 60  # generous for a shared 2-core box; ~6 s when idle


# ---------------------------------------------------------------------------------------------
# local files


def test_csv_joins_text_columns_and_keeps_string_labels(tmp_path: Path) -> None:
    path = write(
        tmp_path / "news.csv",
        'title,description,label\nBig win,"Team wins, again",sports\n'
        '"Multi\nline",body,world\n,,3\n   ,only body,world\n',
    )
    records = list(read_local(path, text_columns=["title", "description"], text_separator=" | "))
    assert records == [
        {"text": "Big win | Team wins, again", "label": "sports", "source": f"{path}:2"},
        {"text": "Multi\nline | body", "label": "world", "source": f"{path}:3"},
        {"text": "", "label": "3", "source": f"{path}:5"},
        {"text": "only body", "label": "world", "source": f"{path}:6"},
    ]


def test_tsv_keeps_bare_quotes_and_labels_normalise(tmp_path: Path) -> None:
    path = write(tmp_path / "sst.tsv", 'sentence\tlabel\nthe "best" film\t1\n"bad\t0\n\n')
    records = list(read_local(path, text_columns=["sentence"]))
    assert [r["text"] for r in records] == ['the "best" film', '"bad']
    assert [r["label"] for r in records] == ["1", "0"]
    assert normalize_labels([r["label"] for r in records]) == [1, 0]
    assert normalize_labels(["1", "pos", None]) == ["1", "pos", None]
    assert normalize_labels([" -2", 3, None]) == [-2, 3, None]
    assert normalize_labels(["1_000", "٣"]) == ["1_000", "٣"]


def test_bom_and_format_override(tmp_path: Path) -> None:
    # Spreadsheet exports start with a BOM; the first column must still be found by name.
    path = write(tmp_path / "export.dat", "\ufefftext,label\nhello world,a\n".encode())
    records = list(read_local(path, format="csv"))
    assert records == [{"text": "hello world", "label": "a", "source": f"{path}:2"}]
    latin = write(tmp_path / "latin.txt", "café crème\n".encode("latin-1"))
    assert [r["text"] for r in read_local(latin, encoding="latin-1")] == ["café crème"]


def test_jsonl_keeps_types_and_empty_text(tmp_path: Path) -> None:
    path = write(
        tmp_path / "data.jsonl",
        '{"text": "one", "label": 1}\n\n{"text": null, "label": 0}\n'
        '{"text": "  ", "label": 2, "extra": [1]}\n{"text": "yes", "label": true}\n',
    )
    assert list(read_local(path)) == [
        {"text": "one", "label": 1, "source": f"{path}:1"},
        {"text": "", "label": 0, "source": f"{path}:3"},
        {"text": "", "label": 2, "source": f"{path}:4"},
        {"text": "yes", "label": 1, "source": f"{path}:5"},
    ]


def test_parquet_streams_row_groups(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    table = pa.table(
        {
            "title": [f"t{i}" for i in range(10)],
            "body": [None if i == 3 else f"b{i}" for i in range(10)],
            "label": ["pos", "neg"] * 5,
        }
    )
    pq.write_table(table, path, row_group_size=3)
    assert pq.ParquetFile(path).num_row_groups == 4
    records = list(read_local(path, text_columns=("title", "body"), text_separator=" . "))
    assert len(records) == 10
    assert records[0] == {"text": "t0 . b0", "label": "pos", "source": f"{path}:1"}
    assert records[3] == {"text": "t3", "label": "neg", "source": f"{path}:4"}
    assert records[9]["source"] == f"{path}:10"
    unlabelled = list(read_local(path, text_columns="title", label_column=None))
    assert {r["label"] for r in unlabelled} == {None}


def test_txt_and_folder_are_sorted_recursive_and_skip_hidden(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    write(folder / "b.txt", "second file\n")
    write(folder / "a" / "z.txt", "first line\n\n  \nthird line\r\n")
    write(folder / "c.csv", "text\nfrom csv\n")
    write(folder / "README.md", "# not data")
    write(folder / ".hidden" / "x.txt", "hidden")
    write(folder / ".DS_Store.txt", "hidden")
    records = list(read_local(folder, label_column=None))
    assert records == [
        {"text": "first line", "label": None, "source": f"{folder}/a/z.txt:1"},
        {"text": "third line", "label": None, "source": f"{folder}/a/z.txt:4"},
        {"text": "second file", "label": None, "source": f"{folder}/b.txt:1"},
        {"text": "from csv", "label": None, "source": f"{folder}/c.csv:2"},
    ]
    only_csv = list(read_local(folder, format="csv", label_column=None))
    assert [r["text"] for r in only_csv] == ["from csv"]


def test_readers_stream_instead_of_loading_the_file(tmp_path: Path) -> None:
    # The malformed last row is only hit after earlier rows were handed out.
    path = write(tmp_path / "big.jsonl", '{"text": "ok", "label": 1}\n' * 50 + "{oops\n")
    records = read_local(path)
    assert inspect.isgenerator(records)
    assert next(records)["source"] == f"{path}:1"
    with pytest.raises(UserError, match="line 51"):
        list(records)


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "expected"),
    [
        ("empty.csv", "", {}, "empty.csv: file is empty"),
        ("blank.txt", "\n  \n", {}, "blank.txt: file holds no records"),
        ("header.csv", "text,label\n", {}, "header.csv: file holds no records"),
        ("data.xlsx", "x", {}, "unsupported extension '.xlsx'"),
        ("data.json", "{}", {}, "unsupported extension '.json'"),
        (
            "bad.csv",
            b"text,label\nok,1\ncaf\xe9,2\n",
            {},
            "bad.csv line 3: bytes are not valid utf-8",
        ),
        ("rows.csv", "text,label\na,1\nb,2,extra\n", {}, "rows.csv line 3: expected 2 fields"),
        ("rows.tsv", "text\tlabel\na\n", {}, "rows.tsv line 2: expected 2 fields"),
        (
            "bad.jsonl",
            '{"text": "a", "label": 1}\n{"text": "b",\n',
            {},
            "bad.jsonl line 2: invalid JSON",
        ),
        ("list.jsonl", '["a", 1]\n', {}, "list.jsonl line 1: expected a JSON object"),
        (
            "nolabel.csv",
            "text,label\na,1\nb, \n",
            {},
            "nolabel.csv line 3: column 'label' is empty",
        ),
        ("null.jsonl", '{"text": "a", "label": null}\n', {}, "null.jsonl line 1: 'label' is empty"),
        (
            "float.jsonl",
            '{"text": "a", "label": 0.5}\n',
            {},
            "float.jsonl line 1: 'label' is float",
        ),
        ("num.jsonl", '{"text": 5, "label": 1}\n', {}, "num.jsonl line 1: 'text' is int"),
        (
            "mixed.jsonl",
            '{"text": "a", "label": 1}\n{"text": "b", "label": "pos"}\n',
            {},
            "mixed.jsonl line 2: 'label' is 'pos' but",
        ),
        (
            "cols.csv",
            "title,label\na,1\n",
            {"text_columns": ["title", "body"]},
            "cols.csv: header has no column 'body'; available: 'title', 'label'",
        ),
        (
            "keys.jsonl",
            '{"sentence": "a", "label": 1}\n',
            {},
            "keys.jsonl line 1: object has no column 'text'; available: 'sentence', 'label'",
        ),
        ("enc.txt", "a\n", {"encoding": "utf-16"}, "enc.txt: encoding 'utf-16' is not supported"),
    ],
)
def test_bad_local_inputs_raise_one_line_user_errors(
    tmp_path: Path, name: str, content: str | bytes, kwargs: dict[str, Any], expected: str
) -> None:
    path = write(tmp_path / name, content)
    message = user_error(lambda: read_local(path, **kwargs))
    assert expected in message
    assert name in message


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"format": "xml"}, "format 'xml' is not supported; use one of: csv, jsonl, parquet"),
        ({"label_column": "text"}, "column 'text' is both a text column and the label column"),
        ({"text_columns": []}, "text_columns is empty"),
    ],
)
def test_bad_options_name_the_option(tmp_path: Path, kwargs: dict[str, Any], expected: str) -> None:
    path = write(tmp_path / "data.csv", "text,label\na,1\n")
    assert expected in user_error(lambda: read_local(path, **kwargs))


def test_bad_parquet_and_paths(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    floats = tmp_path / "floats.parquet"
    pq.write_table(pa.table({"text": ["a"], "label": [0.5]}), floats)
    assert "floats.parquet: column 'label' is double" in user_error(lambda: read_local(floats))
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": [1, None]}), nulls)
    assert "nulls.parquet row 2: 'label' is empty" in user_error(lambda: read_local(nulls))
    fake = write(tmp_path / "fake.parquet", "not parquet at all")
    assert "fake.parquet: not a readable parquet file" in user_error(lambda: read_local(fake))
    assert "nothing: no such file" in user_error(lambda: read_local(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty" / "notes.md", "no data here")
    assert "empty: folder holds no supported files" in user_error(lambda: read_local(tmp_path / "empty"))


def test_sst2_from_shared_data(shared_data_dir: Path) -> None:
    sst2 = shared_data_dir / "sst2"
    train = list(read_local(sst2 / "train.tsv", text_columns=["sentence"]))
    dev = list(read_local(sst2 / "dev.tsv", text_columns=["content"]))
    assert (len(train), len(dev)) == (67349, 872)
    assert set(normalize_labels(r["label"] for r in train)) == {0, 1}
    assert all(r["text"] for r in dev)
    # dev.tsv names its text column differently; the error must say which columns exist.
    message = user_error(lambda: read_local(sst2 / "dev.tsv", text_columns=["sentence"]))
    assert "dev.tsv: header has no column 'sentence'; available: 'label', 'content'" in message


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets (local files through the same load_dataset path; no hub access)


def test_hf_local_parquet_folder_csv_and_label_names(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    folder = tmp_path / "ds"
    folder.mkdir()
    for i in range(2):
        rows = {"text": [f"r{i}a", f"r{i}b"], "label": [0, 1]}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(folder / f"p{i}.parquet")
    cache = str(tmp_path / "cache")
    records = list(read_hf(str(folder), split="train", cache_dir=cache))
    assert [r["text"] for r in records] == ["r0a", "r0b", "r1a", "r1b"]
    assert [r["label"] for r in records] == [0, 1, 0, 1]
    assert records[2]["source"] == f"{folder}[train]:3"
    assert hf_label_names(str(folder), split="train", cache_dir=cache) == ["neg", "pos"]

    csv_path = write(tmp_path / "news.csv", "title,body,topic\nA,a body,x\nB,,y\n")
    records = list(
        read_hf(
            str(csv_path),
            split="validation",
            text_columns=["title", "body"],
            label_column="topic",
            cache_dir=cache,
        )
    )
    assert records == [
        {"text": "A . a body", "label": "x", "source": f"{csv_path}[validation]:1"},
        {"text": "B", "label": "y", "source": f"{csv_path}[validation]:2"},
    ]
    names = hf_label_names(str(csv_path), split="validation", label_column="topic", cache_dir=cache)
    assert names is None

    message = user_error(lambda: read_hf(str(csv_path), split="train", cache_dir=cache))
    assert "no column 'text'; available: 'title', 'body', 'topic'" in message
    missing = str(tmp_path / "missing.parquet")
    assert "missing.parquet: no such file" in user_error(lambda: read_hf(missing, split="train"))
    message = user_error(lambda: read_hf(str(folder), split="train", data_files=["x"], cache_dir=cache))
    assert "data_dir/data_files only apply to hub datasets" in message


# ---------------------------------------------------------------------------------------------
# URL downloads against a local server


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out on purpose make the handler's late write fail; not news.
        pass


class FileServer:
    """A tiny HTTP server on 127.0.0.1 that honours Range and can misbehave on demand."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[dict[str, Any]] = []
        self.truncate_next = False  # send half the body, then drop the connection
        self.ignore_range = False
        self.delay = 0.0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                time.sleep(server.delay)
                body = server.files.get(self.path)
                range_header = self.headers.get("Range")
                entry = {"path": self.path, "range": range_header, "sent": 0}
                server.requests.append(entry)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
                if match and not server.ignore_range:
                    start = int(match.group(1))
                    if start >= len(body):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if server.truncate_next:
                    server.truncate_next = False
                    payload = payload[: len(payload) // 2]
                    self.close_connection = True
                # Recorded before writing: the client may have read it all and the test moved on
                # to check this entry before a write-then-record would have recorded it.
                entry["sent"] = len(payload)
                self.wfile.write(payload)

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def server() -> Iterator[FileServer]:
    srv = FileServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


CSV_BODY = ("text,label\n" + "".join(f"row number {i},{i % 3}\n" for i in range(2000))).encode()


def test_url_download_progress_records_and_cache(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.files["/data/train.csv"] = CSV_BODY
    url = server.url("/data/train.csv")
    sha = hashlib.sha256(CSV_BODY).hexdigest()

    path = read_url(url, cache_dir=tmp_path, sha256=sha)
    assert path.read_bytes() == CSV_BODY and path.name.endswith("-train.csv")
    assert not list(tmp_path.glob("*.part"))
    progress = capsys.readouterr().err
    assert "train.csv" in progress and "100%" in progress

    records = list(iter_url(url, cache_dir=tmp_path, sha256=sha.upper(), progress=False))
    assert len(records) == 2000 and records[1]["label"] == "1"
    assert records[0]["source"] == f"{path}:2"
    assert len(server.requests) == 1  # the second call was served from the cache


def test_url_checksum_mismatch_names_url_and_both_hashes(server: FileServer, tmp_path: Path) -> None:
    server.files["/x.csv"] = CSV_BODY
    url = server.url("/x.csv")
    wrong = "0" * 64
    message = user_error(lambda: read_url(url, cache_dir=tmp_path, sha256=wrong, progress=False))
    actual = hashlib.sha256(CSV_BODY).hexdigest()
    assert url in message and wrong in message and actual in message
    assert list(tmp_path.iterdir()) == []  # nothing half-trusted is left behind
    assert "64 hex digits" in user_error(lambda: read_url(url, cache_dir=tmp_path, sha256="abc"))
    # A corrupted cached copy is detected and replaced.
    good = read_url(url, cache_dir=tmp_path, sha256=actual, progress=False)
    good.write_bytes(b"corrupted")
    assert read_url(url, cache_dir=tmp_path, sha256=actual, progress=False).read_bytes() == CSV_BODY
    assert len(server.requests) == 3


def test_url_resumes_a_truncated_download_with_range(server: FileServer, tmp_path: Path) -> None:
    server.files["/big.csv"] = CSV_BODY
    url = server.url("/big.csv")
    server.truncate_next = True
    message = user_error(lambda: read_url(url, cache_dir=tmp_path, progress=False))
    assert url in message and "run again to resume" in message
    (part,) = tmp_path.glob("*.part")
    half = part.stat().st_size
    assert 0 < half < len(CSV_BODY)

    path = read_url(url, cache_dir=tmp_path, sha256=hashlib.sha256(CSV_BODY).hexdigest())
    assert path.read_bytes() == CSV_BODY and not part.exists()
    assert server.requests[-1]["range"] == f"bytes={half}-"
    assert server.requests[-1]["sent"] == len(CSV_BODY) - half


def test_url_restarts_when_server_ignores_range(server: FileServer, tmp_path: Path) -> None:
    server.files["/f.txt"] = b"hello\nworld\n"
    url = server.url("/f.txt")
    server.ignore_range = True
    part = write(tmp_path / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-f.txt.part", b"hel")
    path = read_url(url, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == b"hello\nworld\n" and not part.exists()
    assert server.requests[-1]["range"] == "bytes=3-"


def test_url_errors_are_one_line(server: FileServer, tmp_path: Path) -> None:
    missing = server.url("/missing.csv")
    assert f"{missing}: HTTP 404" in user_error(lambda: read_url(missing, cache_dir=tmp_path))
    with socket.socket() as sock:  # a port nobody listens on once this socket closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = f"http://127.0.0.1:{port}/x.csv"
    assert "cannot connect" in user_error(lambda: read_url(closed, cache_dir=tmp_path))
    server.files["/slow.csv"] = b"text\nx\n"
    server.delay = 0.5
    slow = server.url("/slow.csv")
    message = user_error(lambda: read_url(slow, cache_dir=tmp_path, timeout=0.1))
    assert f"{slow}: no response within 0.1 s" in message
    assert "not an http(s) URL" in user_error(lambda: read_url("ftp://h/x", cache_dir=tmp_path))


# ---------------------------------------------------------------------------------------------
# dispatcher


def test_iter_records_dispatches_and_validates_options(
    fake_stdlib: Path, server: FileServer, tmp_path: Path
) -> None:
    path = write(tmp_path / "d.jsonl", json.dumps({"body": "hi", "y": 2}) + "\n")
    # A uniform config schema leaves other kinds' options at None; those are ignored.
    records = list(
        iter_records("local", path=path, text_columns=["body"], label_column="y", url=None, top_k=None)
    )
    assert records == [{"text": "hi", "label": 2, "source": f"{path}:1"}]
    unlabelled = iter_records("local", path=path, text_columns="body", label_column=None)
    assert next(unlabelled)["label"] is None

    stdlib = list(iter_records("stdlib", stdlib_dir=fake_stdlib, top_k=1))
    assert {r["label"] for r in stdlib} == {"email", None}

    server.files["/d.txt"] = b"line one\nline two\n"
    url_records = list(
        iter_records("url", url=server.url("/d.txt"), cache_dir=tmp_path / "dl", progress=False)
    )
    assert [r["text"] for r in url_records] == ["line one", "line two"]

    assert "use one of: hf, local, stdlib, url" in user_error(lambda: iter_records("s3"))
    message = user_error(lambda: iter_records("local", path=path, top_k=3))
    assert "source kind 'local' has no option 'top_k'; valid options: path," in message
    assert "needs option 'path'" in user_error(lambda: iter_records("local", path=None))
    assert "needs option 'split'" in user_error(lambda: iter_records("hf", name="x/y"))


def test_a_queued_experiment_reads_relative_data_paths_from_the_project_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dvc exp run --queue -S data.source.path=../shared/...` runs in .dvc/tmp/exps/<copy>, where
    that relative path names nothing: it is read from $DVC_ROOT, the project folder, instead."""
    from lmforge.collect import source_options
    from lmforge.core.config import SourceConfig
    from lmforge.core.io import input_path

    project, data = tmp_path / "project", tmp_path / "shared" / "reviews.csv"
    copy = project / ".dvc" / "tmp" / "exps" / "tmpk2x1"
    copy.mkdir(parents=True)
    data.parent.mkdir()
    data.write_text("text,label\nfine,1\n")
    monkeypatch.chdir(copy)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert input_path("../shared/reviews.csv") == Path("../shared/reviews.csv")  # as given
    monkeypatch.setenv("DVC_ROOT", str(project))
    assert input_path("../shared/reviews.csv").resolve() == data.resolve()
    _, options = source_options(SourceConfig(kind="local", path="../shared/reviews.csv"))
    assert Path(options["path"]).resolve() == data.resolve()
    # A path the copy holds itself, or one nowhere at all, is left as it is (the reader says so).
    (copy / "own.csv").write_text("text,label\nfine,1\n")
    (project / "own.csv").write_text("text,label\nother,0\n")
    assert input_path("own.csv") == Path("own.csv")
    assert input_path("../missing.csv") == Path("../missing.csv")
