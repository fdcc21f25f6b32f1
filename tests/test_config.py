"""Typed configs: defaults < YAML < flags, and clear errors for unknown or mistyped options."""

import argparse

import pytest

from frugalign.config import add_config_arguments, load_config
from frugalign.errors import UserError
from frugalign.recipes.configs import AIHFConfig, DPOConfig, OnlineConfig


def parse(argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, DPOConfig)
    return parser.parse_args(argv)


def test_defaults_yaml_then_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("beta: 0.2\nlearning_rate: 5e-7\nloss: ipo\nreport_to: [tensorboard]\nnum-epochs: 3\n")
    config = load_config(DPOConfig, parse(["--config", str(recipe), "--beta", "0.3"]))
    assert config.beta == 0.3  # the flag wins over the file
    assert config.learning_rate == 5e-7 and config.loss == "ipo" and config.num_epochs == 3
    assert config.report_to == ["tensorboard"]
    assert config.optimizer == "adamw"  # untouched default


def test_boolean_flags_and_lists():
    config = load_config(DPOConfig, parse(["--gradient-checkpointing", "--lora-target-modules", "q_proj", "v_proj"]))
    assert config.gradient_checkpointing is True
    assert config.lora_target_modules == ["q_proj", "v_proj"]
    assert load_config(DPOConfig, parse(["--no-resume"])).resume is False


@pytest.mark.parametrize("text,message", [
    ("betta: 0.1\n", "unknown option 'betta'"),
    ("beta: high\n", "option 'beta': expected float"),
    ("loss: kto\n", "'kto' is not one of dpo, ipo"),
    ("resume: 1\n", "expected true or false"),
    ("- a\n- b\n", "expected a mapping"),
    ("beta: [\n", "not valid YAML"),
])
def test_yaml_mistakes_name_the_file_and_option(tmp_path, text, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    with pytest.raises(UserError, match="bad.yaml") as err:
        load_config(DPOConfig, parse(["--config", str(recipe)]))
    assert message in str(err.value)


def test_invalid_combinations_are_refused():
    with pytest.raises(UserError, match="beta must be positive"):
        load_config(DPOConfig, beta=0.0)
    with pytest.raises(UserError, match="label_smoothing applies to the dpo loss only"):
        load_config(DPOConfig, loss="ipo", label_smoothing=0.1)
    with pytest.raises(UserError, match="unknown tracker"):
        load_config(DPOConfig, report_to=["mlflow"])


def test_the_parts_check_their_options_in_every_command_that_has_them():
    # wDPO weights DPO's loss, so DPO's label smoothing applies to it; IPO has none, in any command
    assert load_config(OnlineConfig, loss="wdpo", label_smoothing=0.1).label_smoothing == 0.1
    for config in (OnlineConfig, AIHFConfig):
        with pytest.raises(UserError, match="label_smoothing applies to the dpo loss only"):
            load_config(config, loss="ipo", label_smoothing=0.1)
        with pytest.raises(UserError, match="beta must be positive"):
            load_config(config, beta=-1.0)
    with pytest.raises(UserError, match="num_epochs must be at least 1"):
        load_config(AIHFConfig, num_epochs=0)


def test_unknown_flag_exits_with_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(["--betta", "0.1"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --betta" in capsys.readouterr().err


def test_missing_config_file():
    with pytest.raises(UserError, match="nope.yaml: config file not found"):
        load_config(DPOConfig, parse(["--config", "nope.yaml"]))
