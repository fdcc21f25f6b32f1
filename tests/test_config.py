"""Typed configs: defaults < YAML < flags, and clear errors for unknown or mistyped options."""

import argparse
from dataclasses import dataclass

import pytest
import yaml

from frugalign.config import Config, add_config_arguments, load_config, options, part, to_dict
from frugalign.errors import UserError
from frugalign.options import AIHFConfig, DPOConfig, OnlineConfig, OnlineOptions, RewardConfig, RLHFConfig, RLOOOptions


def parse(argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, DPOConfig)
    return parser.parse_args(argv)


def test_defaults_yaml_then_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("beta: 0.2\nlearning_rate: 5e-7\nloss: ipo\nreport_to: [tensorboard]\nnum-epochs: 3\n")
    config = load_config(DPOConfig, parse(["--config", str(recipe), "--beta", "0.3"]))
    assert config.loss.beta == 0.3  # the flag wins over the file
    assert config.train.learning_rate == 5e-7 and config.loss.loss == "ipo" and config.epochs.num_epochs == 3
    assert config.train.report_to == ["tensorboard"]
    assert config.train.optimizer == "adamw"  # untouched default


def test_boolean_flags_and_lists():
    config = load_config(DPOConfig, parse(["--gradient-checkpointing", "--lora-target-modules", "q_proj", "v_proj"]))
    assert config.train.gradient_checkpointing is True
    assert config.lora.lora_target_modules == ["q_proj", "v_proj"]
    assert load_config(DPOConfig, parse(["--no-resume"])).train.resume is False


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
    assert load_config(OnlineConfig, loss="wdpo", label_smoothing=0.1).loss.label_smoothing == 0.1
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


def test_a_saved_config_loads_back_as_it_was(tmp_path):
    # a run folder's config.yaml holds the flat options, reusable with --config
    config = load_config(AIHFConfig, beta=0.3, learning_rate=2e-6, variant="explicit", kl_coef=0.1, report_to=["wandb"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    assert load_config(AIHFConfig, yaml_path=str(tmp_path / "config.yaml")) == config


def test_a_command_states_an_option_of_a_shared_part_its_own_way():
    assert load_config(RewardConfig).train.learning_rate == 2e-5 and load_config(DPOConfig).train.learning_rate == 1e-6
    assert load_config(RewardConfig, num_epochs=2).train.learning_rate == 2e-5  # given other options, it keeps it
    assert load_config(OnlineConfig).sampling.top_p == 0.9 and load_config(RLHFConfig).sampling.top_p == 1.0
    helps = {}
    for cls in (AIHFConfig, RLHFConfig, OnlineConfig):
        parser = argparse.ArgumentParser()
        add_config_arguments(parser, cls)
        helps[cls] = {a.dest: a.help for a in parser._actions}
    assert helps[AIHFConfig]["kl_coef"].startswith("explicit: ") and not helps[RLHFConfig]["kl_coef"].startswith("explicit")
    assert helps[OnlineConfig]["top_p"] == "nucleus sampling (default: 0.9)"


def test_an_option_is_in_one_part_of_a_command():
    @dataclass
    class Twice(Config):  # samples_per_prompt twice: one flag could not set both
        rloo: RLOOOptions = part(RLOOOptions)
        online: OnlineOptions = part(OnlineOptions)

    with pytest.raises(TypeError, match="samples_per_prompt is in parts rloo and online"):
        options(Twice)
