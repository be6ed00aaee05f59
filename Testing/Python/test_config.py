"""YAML configs onto typed dataclasses: numbers written the YAML 1.1 way, errors naming file and key, and the
same `--set` overrides in every command."""

from __future__ import annotations

import pytest

from vococore.utils.config import load_config
from vococore.utils.errors import VoCoError
from vococore.pretraining.run import PretrainConfig


def test_exponent_without_dot_is_a_number_in_files_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-3\nweight_decay: 5e-2\nsteps: 10\n")  # PyYAML reads both as strings
    config = load_config(PretrainConfig, path, {"grad_clip": "1e0"})
    assert (config.lr, config.weight_decay, config.grad_clip) == (0.001, 0.05, 1.0)
    assert isinstance(config.lr, float)


@pytest.mark.parametrize("key, value", [("lr", "fast"), ("lr", True), ("steps", "ten")])
def test_wrong_types_name_the_file_and_key(tmp_path, key, value):
    path = tmp_path / "run.yaml"
    path.write_text("steps: 10\n")
    with pytest.raises(VoCoError) as err:
        load_config(PretrainConfig, path, {key: value})
    assert key in str(err.value) and "run.yaml" in str(err.value)


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_set_takes_several_values_and_repeats_in_every_command(command):
    from vococore.cli import build_parser
    from vococore.cli.pretrain import parse_overrides

    args = build_parser().parse_args([command, "--config", "x.yaml", "--set", "a.b=1", "c=[2, 3]", "--set", "d=1e-3"])
    assert parse_overrides(args.overrides) == {"a.b": 1, "c": [2, 3], "d": "1e-3"}  # the config makes d a float


def test_config_path_finds_packaged_configs_and_lists_them_when_missing(tmp_path):
    from vococore.utils.config import config_path

    assert config_path("pretrain_small").name == config_path("pretrain_small.yaml").name == "pretrain_small.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text("steps: 1\n")
    assert config_path(own) == own
    with pytest.raises(VoCoError, match=r"nope.*not found \(packaged: finetune_small, finetune_swin_B\)"):
        config_path("nope", "finetune")
