"""Config: params.yaml stays the composition of conf/, bad configs fail in one line at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lmforge.core.config import Config, validate
from lmforge.core.errors import UserError
from lmforge.params import main as params_main

ROOT = Path(__file__).resolve().parents[1]


def test_params_yaml_is_the_composition_of_conf(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    assert params_main(["--check"]) == 0, "params.yaml drifted: run `python -m lmforge.params`"


def test_params_yaml_validates_against_the_schema() -> None:
    cfg = validate(OmegaConf.load(ROOT / "params.yaml"))
    assert isinstance(cfg, Config)
    assert cfg.data.source.kind == "stdlib"
    assert cfg.pretrain.mask_rate == pytest.approx(0.15)


def test_the_built_in_recipe_is_the_default_and_any_experiment_replaces_it() -> None:
    """`make run` (no experiment named) gets experiment=builtin: word vectors, no masked LM;
    `experiment=...` replaces the preset whole, so the other presets keep the groups' defaults."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        default = validate(compose("config"))
        tiny = validate(compose("config", overrides=["experiment=tiny"]))
        sst2 = validate(compose("config", overrides=["experiment=sst2"]))
    assert default.vectors.enabled and not default.pretrain.enabled
    assert default.data.source.kind == "stdlib" and default.task.name == "classification"
    for preset in (tiny, sst2):
        assert preset.pretrain.enabled and not preset.vectors.enabled


def test_the_default_recipe_fuses_an_n_gram_model_wherever_it_can_and_each_lever_switches() -> None:
    """Issue 34: the default fuses the n-gram model (null: wherever it can be) and bounds its
    epochs by a budget of examples; the other tasks, an ensemble and the presets that measured
    their figures without it get none; each lever switches by config."""
    from lmforge.core.config import compose

    default = compose([])
    assert default.finetune.ngram_fusion is True and default.vectors.enabled
    assert default.finetune.input_len() == 1024 > default.finetune.max_len
    assert compose(["finetune.ngram_fusion=false"]).finetune.input_len() == default.finetune.max_len
    assert compose(["task=tagging"]).finetune.ngram_fusion is False
    assert compose(["finetune.ensemble=2"]).finetune.ngram_fusion is False
    assert compose(["experiment=sst2"]).finetune.ngram_fusion is False
    assert compose(["experiment=sst2_fusion"]).finetune.ngram_fusion is True
    with pytest.raises(UserError, match="finetune.ngram_fusion"):
        compose(["task=tagging", "finetune.ngram_fusion=true"])
    # The budget: whole epochs within 50,000 examples, at least one, at most max_epochs.
    f = default.finetune
    assert (f.budget_examples, f.max_epochs) == (50000, 6)
    assert [f.epochs(n) for n in (2803, 10000, 24000, 40000, 67000)] == [6, 5, 2, 1, 1]
    assert compose(["finetune.budget_examples=null"]).finetune.epochs(40000) == 6


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"model": {"d_modl": 3}}, "unknown config key 'model.d_modl'"),
        ({"model": {"d_model": "wide"}}, "config key 'model.d_model'"),
        ({"optim": {"lr": -1.0}}, "config key 'optim.lr'"),
        ({"pretrain": {"mask_rate": 1.2}}, "config key 'pretrain.mask_rate'"),
        ({"pretrain": {"batch_size": 0}}, "config key 'pretrain.batch_size'"),
        ({"tokenizer": {"vocab_size": 10}}, "config key 'tokenizer.vocab_size'"),
        ({"model": {"n_heads": 3}}, "config key 'model.n_heads'"),
        ({"data": {"source": {"kind": "ftp"}}}, "config key 'data.source.kind'"),
    ],
)
def test_bad_values_raise_one_line_user_errors(override: dict, expected: str) -> None:
    cfg = OmegaConf.merge(OmegaConf.load(ROOT / "params.yaml"), override)
    with pytest.raises(UserError) as info:
        validate(cfg)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def run_stage(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "lmforge.prepare", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["model.d_modl=3"], "unknown config key 'model.d_modl'; valid keys under 'model': causal, d_ff"),
        (["nonsense=1"], "unknown config key 'nonsense'; valid keys at the top level"),
        (["model.d_model=wide"], "config key 'model.d_model'"),
        (["pretrain.mask_rate=0"], "config key 'pretrain.mask_rate'"),
        # A config group's unknown option: one line listing conf/<group>/*.yaml (Hydra's own
        # message spans 12 to 20 lines and exits 1).
        (["experiment=nope"], "unknown experiment 'nope'; valid choices: experiment=builtin, docsum,"),
        (["task=taggin"], "unknown task 'taggin'; valid choices: task=classification, tagging, text2text"),
        (["-m", "model=tiny,bigg"], "unknown model 'bigg'; valid choices: model=hf, mini, small, tiny"),
        # The experiment picks the task: another task's key is named against it.
        (["experiment=ud_ewt", "task.max_target_len=4"], "'task.max_target_len' for task=tagging"),
    ],
)
def test_command_line_config_errors_are_one_line_without_traceback(args, expected) -> None:
    done = run_stage(*args)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_help_lists_the_config_groups() -> None:
    done = run_stage("--help")
    assert done.returncode == 0
    for group in ("data", "model", "pretrain", "finetune", "trainer"):
        assert group in done.stdout
