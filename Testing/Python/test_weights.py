"""Weight loading from every official and own layout, built from real MONAI SwinUNETR(use_v2=True) networks."""

from __future__ import annotations

import pickle

import pytest
import torch

from vococore.utils.errors import VoCoError
from vococore.networks.backbones import BackboneSpec, build_encoder, build_segmenter
from vococore.networks.legacy_merging import LegacyPatchMerging
from vococore.networks.weights import load_weights

FS = 12
N_ENCODER, N_FULL = 145, 167


def spec(fs: int = FS, legacy: bool = True) -> BackboneSpec:
    return BackboneSpec(arch="swin", feature_size=fs, legacy_merging=legacy, use_checkpoint=False)


@pytest.fixture(scope="module")
def encoder_sd() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return build_encoder(spec()).state_dict()


def target(out_channels: int = 5, legacy: bool = True) -> torch.nn.Module:
    torch.manual_seed(2)
    return build_segmenter(spec(legacy=legacy), out_channels)


def test_flat_official_encoder_into_segmenter(tmp_path, encoder_sd):
    assert len(encoder_sd) == N_ENCODER
    torch.save(dict(encoder_sd), tmp_path / "VoCo_B_SSL_head.pt")
    model = target(legacy=False)
    report = load_weights(model, tmp_path / "VoCo_B_SSL_head.pt")
    assert (len(report.matched), report.total) == (N_ENCODER, N_FULL)
    assert len(report.missing) == N_FULL - N_ENCODER and all(k.startswith(("decoder", "out.")) for k in report.missing)
    assert report.unexpected == [] and report.shape_mismatch == []
    key = "swinViT.layers2.0.blocks.1.attn.qkv.weight"
    assert torch.equal(model.state_dict()[key], encoder_sd[key])
    # official weights come from MONAI 1.3.0: the model was switched to the legacy patch merging, and it says so
    assert report.legacy_merging is True
    assert sum(isinstance(m, LegacyPatchMerging) for m in model.modules()) == 4
    assert "145/167" in report.summary() and "MONAI 1.3.0" in report.summary()


def test_state_dict_wrapper_with_module_prefix(tmp_path):
    torch.manual_seed(3)
    full = build_segmenter(spec(), 14).state_dict()
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in full.items()}}, tmp_path / "monai.pt")
    report = load_weights(target(), tmp_path / "monai.pt")
    assert len(report.matched) == N_FULL - 2
    assert sorted(k for k, _, _ in report.shape_mismatch) == ["out.conv.conv.bias", "out.conv.conv.weight"]
    assert report.unexpected == [] and report.missing == []
    assert "'state_dict' wrapper" in report.layout and "'module.' stripped" in report.layout


def test_v2_training_checkpoint_backbone_student_teacher(tmp_path, encoder_sd):
    heads = {f"{who}.layer{i}.0.weight": torch.randn(8, 8) for who in ("student", "teacher") for i in (1, 2, 3)}
    ckpt = {"global_step": 20000, "state_dict": {**{"backbone." + k: v for k, v in encoder_sd.items()}, **heads}}
    torch.save(ckpt, tmp_path / "v2.pt")
    report = load_weights(target(), tmp_path / "v2.pt")
    assert len(report.matched) == N_ENCODER
    assert report.unexpected == sorted(heads)


def test_v1_training_checkpoint_student_prefix_and_swin_vit_name(tmp_path, encoder_sd):
    torch.manual_seed(4)
    teacher = build_encoder(spec()).state_dict()
    sd = {f"module.student.{k.replace('swinViT.', 'swin_vit.')}": v for k, v in encoder_sd.items()}
    sd.update({f"module.teacher.{k}": v for k, v in teacher.items()})
    sd["module.student.proj_head.layer1.0.weight"] = torch.randn(4, 4)
    torch.save({"global_step": 100, "state_dict": sd, "optimizer": {"lr": 1e-4}}, tmp_path / "v1.pt")
    model = target()
    report = load_weights(model, tmp_path / "v1.pt")
    assert len(report.matched) == N_ENCODER
    assert len(report.unexpected) == N_ENCODER + 1  # the teacher and the projection head are not loaded
    key = "swinViT.patch_embed.proj.weight"
    assert torch.equal(model.state_dict()[key], encoder_sd[key]) and not torch.equal(encoder_sd[key], teacher[key])


def test_vocomni_full_model_21_channels_into_5_class(tmp_path):
    torch.manual_seed(5)
    torch.save(build_segmenter(spec(), 21).state_dict(), tmp_path / "VoComni_B.pt")
    report = load_weights(target(5), tmp_path / "VoComni_B.pt")
    assert len(report.matched) == N_FULL - 2 and len(report.shape_mismatch) == 2
    assert ("out.conv.conv.weight", (5, FS, 1, 1, 1), (21, FS, 1, 1, 1)) in report.shape_mismatch


def test_our_pretraining_checkpoint_records_merging(tmp_path, encoder_sd):
    model_sd = {**{"backbone." + k: v for k, v in encoder_sd.items()}, "student.layer1.0.weight": torch.zeros(2)}
    ckpt = {"format": "vococore-checkpoint", "model": model_sd, "recipe": "v2",
            "backbone": {"arch": "swin", "feature_size": FS, "legacy_merging": False, "use_checkpoint": True,
                         "in_channels": 1}}
    torch.save(ckpt, tmp_path / "pretrain.pt")
    model = target(legacy=True)
    report = load_weights(model, tmp_path / "pretrain.pt")
    assert len(report.matched) == N_ENCODER and report.unexpected == ["student.layer1.0.weight"]
    assert report.legacy_merging is False
    assert not any(isinstance(m, LegacyPatchMerging) for m in model.modules())


def test_safetensors_encoder(tmp_path, encoder_sd):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in encoder_sd.items()}, str(tmp_path / "enc.safetensors"))
    report = load_weights(build_encoder(spec()), tmp_path / "enc.safetensors")
    assert (len(report.matched), report.total) == (N_ENCODER, N_ENCODER)


def test_other_feature_size_is_refused_naming_the_file(tmp_path):
    torch.save(build_encoder(spec(fs=24)).state_dict(), tmp_path / "fs24.pt")
    model = target()
    before = model.state_dict()["encoder1.layer.conv1.conv.weight"].clone()
    with pytest.raises(VoCoError) as err:
        load_weights(model, tmp_path / "fs24.pt")
    message = str(err.value)
    assert str(tmp_path / "fs24.pt") in message and "feature size 24 but the model 12" in message
    assert torch.equal(model.state_dict()["encoder1.layer.conv1.conv.weight"], before)  # untouched


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_pickles_are_not_unpickled(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"state_dict": _Payload()}, fh)
    with pytest.raises(VoCoError, match="refuses to unpickle"):
        load_weights(target(), tmp_path / "evil.pt")
    assert "must never run" not in capsys.readouterr().out


def test_b_size_encoder_loads_completely(tmp_path):
    torch.save(build_encoder(spec(fs=48)).state_dict(), tmp_path / "b.pt")
    report = load_weights(build_encoder(spec(fs=48)), tmp_path / "b.pt")
    assert (len(report.matched), report.total, report.fraction) == (N_ENCODER, N_ENCODER, 1.0)


def test_our_model_package_as_pretrained_weights(tmp_path):
    from vococore.io.labels import make_labels
    from vococore.segmentation.package import ModelPackage, save_package

    cnn = BackboneSpec(arch="cnn", feature_size=4, legacy_merging=False, use_checkpoint=False)
    torch.manual_seed(6)
    source = build_segmenter(cnn, 3)
    save_package(source, ModelPackage(backbone=cnn, labels=make_labels({1: "a", 2: "b"}), roi_size=(32, 32, 32)),
                 tmp_path / "m.vocomodel")
    report = load_weights(build_segmenter(cnn, 6), tmp_path / "m.vocomodel")
    assert report.layout.startswith("vococore model package") and report.legacy_merging is None  # not Swin
    assert sorted(k for k, _, _ in report.shape_mismatch) == ["final_conv.bias", "final_conv.weight"]
    assert len(report.matched) == report.total - 2 and report.unexpected == []
