"""export-encoder: a Swin checkpoint written through the real training save path becomes the 145-tensor MONAI
release file that SwinUNETR(use_v2=True) loads, with a sidecar the loader reads; a CNN checkpoint is refused
with a clear message."""

from __future__ import annotations

import torch

from vococore.cli import main
from vococore.utils.config import to_dict
from vococore.networks.backbones import BackboneSpec
from vococore.pretraining.pretext import get_recipe
from vococore.training.distributed import DistInfo
from vococore.training.loop import LoopConfig, Trainer


def _checkpoint(tmp_path, spec: BackboneSpec, recipe: str):
    from vococore.pretraining.model import VoCoModel

    model = VoCoModel(spec, recipe)
    trainer = Trainer(model, lambda m, b: {}, LoopConfig(steps=1), tmp_path / "run", DistInfo(), backbone=spec,
                      recipe=to_dict(get_recipe(recipe)), tensorboard=False)
    return model, trainer.save({"next_step": 0})


def test_swin_b_export_loads_into_monai_swinunetr(tmp_path):
    from monai.networks.nets import SwinUNETR

    spec = BackboneSpec(arch="swin", feature_size=48, legacy_merging=True, use_checkpoint=True)
    model, ckpt = _checkpoint(tmp_path, spec, "v2")
    out = tmp_path / "VoCo_B_SSL_head.pt"
    assert main(["export-encoder", str(ckpt), str(out)]) == 0
    state = torch.load(out, weights_only=True)
    assert len(state) == 145 and all(v.dtype == torch.float32 for v in state.values())
    assert {k.split(".")[0] for k in state} == {"swinViT", "encoder1", "encoder2", "encoder3", "encoder4",
                                                  "encoder10"}
    net = SwinUNETR(in_channels=1, out_channels=14, feature_size=48, use_v2=True)
    result = net.load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    matched = [k for k in state if k not in result.missing_keys]
    assert len(matched) == 145
    net_state = net.state_dict()
    backbone = model.backbone.state_dict()
    assert all(torch.equal(net_state[k], backbone[k]) for k in state)  # the trained weights, not MONAI's init
    assert main(["export-encoder", str(ckpt), str(out)]) == 2  # refuses to overwrite without --overwrite
    assert main(["export-encoder", str(ckpt), str(out), "--overwrite"]) == 0


def test_sidecar_records_patch_merging_for_the_loader(tmp_path):
    """The flat file cannot say how it was trained; ``<file>.json`` does, and the loader uses it only while it
    describes this very file (an unrecorded flat file gets MONAI 1.3.0 merging, so ``False`` proves the read)."""
    import json

    from vococore.networks.backbones import build_segmenter
    from vococore.networks.weights import load_weights

    spec = BackboneSpec(arch="swin", feature_size=12, legacy_merging=False, use_checkpoint=False)
    _, ckpt = _checkpoint(tmp_path, spec, "v2")
    out = tmp_path / "encoder.pt"
    assert main(["export-encoder", str(ckpt), str(out)]) == 0
    info = json.loads((tmp_path / "encoder.pt.json").read_text())
    assert info["backbone"]["legacy_merging"] is False and info["backbone"]["feature_size"] == 12
    assert info["recipe"] == "v2" and info["tensors"] == 145 and len(info["weights_sha256"]) == 64
    target = BackboneSpec(arch="swin", feature_size=12, legacy_merging=True, use_checkpoint=False)
    report = load_weights(build_segmenter(target, 3), out, min_fraction=0.3)
    assert report.legacy_merging is False and "encoder.pt.json" in report.layout
    torch.save(torch.load(out, weights_only=True) | {"extra": torch.zeros(1)}, out)  # the file changed
    report = load_weights(build_segmenter(target, 3), out, min_fraction=0.3)
    assert report.legacy_merging is True and "ignored" in report.layout
    assert main(["export-encoder", str(ckpt), str(tmp_path / "other.pt")]) == 0
    (tmp_path / "other.pt").unlink()  # a leftover sidecar alone still blocks a silent overwrite
    assert main(["export-encoder", str(ckpt), str(tmp_path / "other.pt")]) == 2


def test_cnn_checkpoint_is_refused(tmp_path, capsys):
    _, ckpt = _checkpoint(tmp_path, BackboneSpec(arch="cnn", feature_size=4, legacy_merging=False), "small")
    assert main(["export-encoder", str(ckpt), str(tmp_path / "enc.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "last.pt" in err[0] and "cnn checkpoint" in err[0]
    assert not (tmp_path / "enc.pt").exists()
