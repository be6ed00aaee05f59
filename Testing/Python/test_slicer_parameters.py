"""VoCoSlicerLib.parameters: validation gives a reason a person can act on, command lines are what vococore
parses, and the pretraining config loads into vococore's own config class."""

from __future__ import annotations

from VoCoSlicerLib.parameters import FinetuneParameters, PretrainParameters, SegmentParameters


def test_segment_validation_reasons(tmp_path):
    model = tmp_path / "m.vocomodel"
    params = SegmentParameters(model="VoComni_B", device="auto")
    assert params.validate(None, None).reason == "Select an input CT volume."
    assert params.validate("CT", None)
    assert not SegmentParameters(model="", device="cpu").validate("CT", None)
    assert SegmentParameters(model="", device="cpu").validate("CT", model).reason.startswith("Model file")
    model.write_bytes(b"x")
    assert SegmentParameters(model="", device="cpu").validate("CT", model)
    assert "Unknown device 'tpu'" in SegmentParameters(device="tpu").validate("CT", None).reason


def test_segment_command_parses_with_vococore_infer(tmp_path):
    import argparse

    from vococore.cli import infer

    command = SegmentParameters(device="cpu").command(tmp_path / "m.vocomodel", tmp_path / "ct.nii.gz",
                                                      tmp_path / "out.seg.nrrd", python="PythonSlicer")
    assert command[:3] == ["PythonSlicer", "-m", "vococore"]
    parser = argparse.ArgumentParser()
    infer.register(parser.add_subparsers())
    args = parser.parse_args(command[3:])
    assert args.model == str(tmp_path / "m.vocomodel") and args.input == [str(tmp_path / "ct.nii.gz")]
    assert args.output.endswith(".seg.nrrd") and args.device == "cpu" and args.json_progress


def test_pretrain_validation_and_config(tmp_path, sample):
    from vococore.utils.config import from_dict
    from vococore.pretraining.run import PretrainConfig

    data = sample("TotalSegCT").parent
    out = tmp_path / "run"
    params = PretrainParameters(data=str(data), output_dir=str(out), recipe="small", steps=50, device="cpu")
    assert params.validate()
    config = from_dict(PretrainConfig, params.config())
    assert (config.recipe, config.steps, config.device, config.output_dir) == ("small", 50, "cpu", str(out))
    # vococore's own CPU preset for the recipe supplies the backbone and optimiser settings
    from vococore.utils.config import config_path
    from vococore.utils.config import load_config

    preset = load_config(PretrainConfig, config_path("pretrain_small"))
    assert config.backbone == preset.backbone and config.backbone.arch == "cnn"
    assert (config.lr, config.batch_size) == (preset.lr, preset.batch_size)
    assert 1 <= config.checkpoint_every <= config.steps
    assert params.command(tmp_path / "c.yaml")[3:] == ["pretrain", "--config", str(tmp_path / "c.yaml"),
                                                       "--json-progress"]

    assert "Nothing to resume" in PretrainParameters(str(data), str(out), resume=True).validate().reason
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"")
    assert "already holds a run" in PretrainParameters(str(data), str(out)).validate().reason
    resume = PretrainParameters(str(data), str(out), resume=True)
    assert resume.validate() and resume.command(tmp_path / "c.yaml")[-1] == "--resume"
    assert "does not exist" in PretrainParameters(str(tmp_path / "nope"), str(out)).validate().reason
    assert "Unknown recipe" in PretrainParameters(str(data), str(tmp_path / "x"), recipe="v3").validate().reason


def test_finetune_validation_and_config(tmp_path):
    import json

    import yaml

    from vococore.segmentation.finetune import load_finetune_config

    image, label = tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz"
    params = FinetuneParameters(pairs=[(str(image), str(label))], classes=["liver", "spleen"],
                                colors={"liver": (0.8, 0.4, 0.2)}, output_dir=str(tmp_path / "ft"), steps=20)
    assert "Missing training file" in params.validate().reason
    image.write_bytes(b"")
    label.write_bytes(b"")
    assert params.validate()
    assert FinetuneParameters(output_dir="x").validate().reason == "Add at least one CT volume with its segmentation."
    assert "no segments" in FinetuneParameters(pairs=params.pairs, output_dir="x").validate().reason
    table = tmp_path / "labels.json"
    table.write_text(json.dumps(params.label_table()))
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(params.config(table)))
    config = load_finetune_config(path)  # vococore's own reader accepts every key
    assert config.data.images == [str(image)] and config.data.labels == [str(label)]
    assert config.data.classes == ["liver", "spleen"] and config.data.colors == {"liver": [0.8, 0.4, 0.2]}
    assert json.loads(table.read_text()) == {"1": "liver", "2": "spleen"}
    assert config.train.steps == 20 and config.output_dir == str(tmp_path / "ft") and config.pretrained is None
