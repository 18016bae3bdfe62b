"""One home for every default: the schema (``src/lmforge/core/config.py``), never a copy in ``conf/``.

The options ``conf/config.yaml`` picks in its defaults list (and its own keys) must not restate a
value the schema already gives the same key: two copies of a default drift apart unnoticed. The
groups are read from the defaults list, so a new group, or a group's new schema, is covered as soon
as it is listed there. Option files may still set what they change (``conf/logger/mlflow.yaml``
naming a team's server, ``experiment=builtin`` turning the word vectors on).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from lmforge.core.config import SCHEMA_NAME, compose, schema_defaults

ROOT = Path(__file__).resolve().parents[1]


def _same(a: Any, b: Any) -> bool:
    """Equal as config values: 1 and 1.0 alike, but a bool is no number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return type(a) is type(b) and a == b


def _package(path: Path, group: str) -> str:
    """Where an option's keys land: its ``# @package`` header, else the group's own path."""
    for line in path.read_text().splitlines():
        if line.startswith("# @package"):
            package = line.split(None, 2)[2].strip()
            if package == "_global_":
                return ""
            return package.replace("_group_", group.replace("/", "."))
    return group.replace("/", ".")


def _load_option(conf: Path, group: str, option: str) -> dict[str, Any]:
    """An option as Hydra reads it: its own defaults list (same group) merged under it."""
    data = yaml.safe_load((conf / group / f"{option}.yaml").read_text()) or {}
    own_defaults = data.pop("defaults", [])
    merged: dict[str, Any] = {}
    for entry in own_defaults or ["_self_"]:
        if entry == "_self_":
            merged = _merge(merged, data)
        elif isinstance(entry, str):
            merged = _merge(merged, _load_option(conf, group, entry))
    if "_self_" not in (own_defaults or ["_self_"]):
        merged = _merge(merged, data)
    return merged


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if nested else value
    return out


def _leaves(values: dict, schema: Any, prefix: str) -> list[tuple[str, Any, Any]]:
    """(dotted key, value, schema default) for each key of ``values`` the schema also has, down to
    the schema's leaves (a free-form mapping such as ``data.source.splits`` is one leaf)."""
    found = []
    for key, value in values.items():
        if not isinstance(schema, dict) or key not in schema:
            continue  # not a schema key: validate() reports it
        default = schema[key]
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(default, dict) and default:
            found += _leaves(value, default, dotted + ".")
        else:
            found.append((dotted, value, default))
    return found


def default_options(conf: Path, schema_name: str = SCHEMA_NAME) -> list[tuple[str, str | None]]:
    """``(group, option)`` for each entry of ``conf/config.yaml``'s defaults list; group
    ``None`` is the file's own keys (``_self_``). The schema entry, null options and optional
    options whose file is absent are left out."""
    data = yaml.safe_load((conf / "config.yaml").read_text())
    picked: list[tuple[str, str | None]] = []
    for entry in data.get("defaults", []):
        if entry == "_self_":
            picked.append(("", None))
        elif isinstance(entry, dict):
            ((group, option),) = entry.items()
            optional = group.startswith("optional ")
            group = group.removeprefix("optional ").removeprefix("override ").strip()
            # An optional entry (conf/local/, a machine's own) is checked where it is present.
            missing = optional and not (conf / group / f"{option}.yaml").is_file()
            if option is not None and not group.startswith("hydra/") and not missing:
                picked.append((group, str(option)))
        elif entry != schema_name:
            raise AssertionError(f"conf/config.yaml: defaults entry {entry!r} is not a group option")
    return picked


def duplicated_defaults(
    conf: Path, schema: dict[str, Any] | None = None, schema_name: str = SCHEMA_NAME
) -> list[str]:
    """Every value a default option (or config.yaml itself) restates from the schema, one line each."""
    schema = schema_defaults() if schema is None else schema
    found = []
    for group, option in default_options(conf, schema_name):
        if option is None:
            path = conf / "config.yaml"
            values = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "defaults"}
            package = ""
        else:
            path = conf / group / f"{option}.yaml"
            values = _load_option(conf, group, option)
            package = _package(path, group)
        node: Any = schema
        for part in filter(None, package.split(".")):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        prefix = f"{package}." if package else ""
        for key, value, default in _leaves(values, node, prefix):
            if _same(value, default):
                found.append(
                    f"{path.relative_to(conf.parent)}: {key} = {value!r} repeats the schema's default "
                    "(src/lmforge/core/config.py); delete it there"
                )
    return found


def test_no_default_is_written_both_in_the_schema_and_in_a_default_option() -> None:
    assert duplicated_defaults(ROOT / "conf") == []


def test_the_defaults_list_names_every_schema_group_it_composes() -> None:
    """The check reads the groups from the defaults list: each one must exist, or it checks nothing."""
    picked = default_options(ROOT / "conf")
    groups = {group for group, option in picked if option is not None}
    assert {"data", "model", "optim", "pretrain", "finetune", "logger", "experiment"} <= groups
    for group, option in picked:
        if option is not None:
            assert (ROOT / "conf" / group / f"{option}.yaml").is_file(), (group, option)


@pytest.mark.parametrize(
    ("file", "text", "expected"),
    [
        # a group option restating a leaf default: the schema tree's (finetuning lr 3e-4, set by
        # Config.optim), not only the leaf class's (OptimConfig.lr 1e-3)
        ("optim/finetune.yaml", "lr: 3.0e-4\n", "conf/optim/finetune.yaml: optim.lr = 0.0003"),
        ("optim/finetune.yaml", "weight_decay: 0.01\n", "conf/optim/finetune.yaml: optim.weight_decay"),
        ("model/small.yaml", "d_model: 128\nlora:\n  r: 8\n", "conf/model/small.yaml: model.lora.r = 8"),
        ("trainer/cpu.yaml", "devices: 1\n", "conf/trainer/cpu.yaml: trainer.devices = 1"),
        # config.yaml's own keys, and a global preset
        ("config.yaml", "paths:\n  raw: data/raw\n", "conf/config.yaml: paths.raw = 'data/raw'"),
        ("experiment/builtin.yaml", "seed: 0\n", "conf/experiment/builtin.yaml: seed = 0"),
        # a free-form mapping is one leaf
        ("data/stdlib.yaml", "source:\n  splits: {}\n", "conf/data/stdlib.yaml: data.source.splits = {}"),
    ],
)
def test_the_check_reports_a_default_copied_into_conf(
    tmp_path: Path, file: str, text: str, expected: str
) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    with open(conf / file, "a") as out:
        out.write("\n" + text)
    found = duplicated_defaults(conf)
    assert any(line.startswith(expected) for line in found), found


def test_an_option_may_set_what_it_changes(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    with open(conf / "logger" / "mlflow.yaml", "a") as out:
        out.write("\ntracking_uri: http://mlflow.internal:5000\nsystem_metrics: false\n")
    assert duplicated_defaults(conf) == []
    # A bool is no number: `enabled: 0`-style values are not mistaken for the default False.
    assert not any("devices" in line for line in duplicated_defaults(conf, {"trainer": {"devices": True}}))


def test_the_effective_default_is_the_composition_not_the_bare_schema() -> None:
    """``Config()`` is the schema alone; what a run gets also applies experiment=builtin."""
    from lmforge.core.config import Config

    effective = compose(root=ROOT)
    assert effective.vectors.enabled and not effective.pretrain.enabled
    assert not Config().vectors.enabled and Config().pretrain.enabled
    assert effective.optim.lr == pytest.approx(3e-4) and effective.pretrain.optim.lr == pytest.approx(1e-3)
    assert compose(["optim.lr=1e-4"], root=ROOT).optim.lr == pytest.approx(1e-4)


def test_promote_reads_the_composed_config_not_the_bare_schema(tmp_path: Path, monkeypatch, capsys) -> None:
    """A registered model set in conf/ (as tools/make_project.py does) is the one promote uses."""
    from lmforge.promote import main

    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    with open(tmp_path / "conf" / "logger" / "mlflow.yaml", "a") as out:
        out.write("\nregistered_model: null\n")
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2
    assert "logger.registered_model is null" in capsys.readouterr().err


def test_dvc_composes_the_schema_in_a_fresh_process(tmp_path: Path) -> None:
    """`dvc exp run -S` composes conf/ in DVC's own process, which imports nothing of lmforge:
    Hydra's plugin scan must register the schema there, and a key only the schema names (no YAML
    writes model.lora.r) can be set."""
    import subprocess
    import sys

    code = (
        "import sys; from dvc.utils.hydra import compose_and_dump; "
        f"compose_and_dump({str(tmp_path / 'params.yaml')!r}, {str(ROOT / 'conf')!r}, None, 'config', "
        f"{str(ROOT / '.dvc' / 'hydra')!r}, ['finetune.ngram_fusion=true', 'model.lora.r=4']); "
        "assert 'hydra_plugins.lmforge_schema' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["finetune"]["ngram_fusion"] is True and params["model"]["lora"]["r"] == 4
    assert params["optim"]["lr"] == pytest.approx(3e-4) and params["vectors"]["enabled"] is True
