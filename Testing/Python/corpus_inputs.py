"""Builds the damaged and unusual inputs of the bad-input corpus (test_corpus_bad_input.py) from the real sample
CT: damaged bytes, lying headers, broken DICOM series, foreign and unsafe checkpoints, non-labelmaps, and small
file systems that are read-only or full."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch


class Evil:
    """Pickles as a call to os.system: weights-only loading must refuse it (it is never run)."""

    def __reduce__(self):
        return os.system, ("echo pwned",)


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, **pixdim: float) -> Path:
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    for axis, value in pixdim.items():
        img.header["pixdim"]["xyz".index(axis) + 1] = value
    nib.save(img, str(path))
    return path


def _nrrd(path: Path, block: np.ndarray, fields: str) -> Path:
    """A hand-written NRRD header (so that it can lie) over raw int16 voxels of real CT."""
    head = (f"NRRD0004\ntype: short\ndimension: 3\nsizes: {' '.join(map(str, block.shape))}\n"
            f"encoding: raw\nendian: little\n{fields}\n\n")
    path.write_bytes(head.encode() + np.asfortranarray(block.astype("<i2")).tobytes(order="F"))
    return path


def _mhd(path: Path, block: np.ndarray, fields: str, raw: str | None = None) -> Path:
    raw_name = raw or path.with_suffix(".raw").name
    path.write_text(f"ObjectType = Image\nNDims = 3\nDimSize = {' '.join(map(str, block.shape))}\n"
                    f"ElementType = MET_SHORT\n{fields}\nElementDataFile = {raw_name}\n")
    if raw is None:
        (path.parent / raw_name).write_bytes(np.asfortranarray(block.astype("<i2")).tobytes(order="F"))
    return path


def _dicom_copy(src: Path, dst: Path, n: int = 12) -> list[Path]:
    dst.mkdir()
    files = sorted(src.iterdir())[:n]
    for f in files:
        shutil.copy(f, dst / f.name)
    return sorted(dst.iterdir())


def tiny_package(path: Path) -> Path:
    """An untrained 1-label BasicUNet package (6 mm, 32³ windows): enough to reach every input check of infer."""
    from vococore.io.labels import LabelInfo
    from vococore.networks.backbones import BackboneSpec, build_segmenter
    from vococore.preprocessing.preprocessor import PreprocessConfig
    from vococore.segmentation.package import ModelPackage, save_package

    torch.manual_seed(0)
    spec = BackboneSpec(arch="cnn", feature_size=4, legacy_merging=False, use_checkpoint=False)
    package = ModelPackage(backbone=spec, labels=[LabelInfo(1, "liver", (0.8, 0.3, 0.2))],
                           preprocess=PreprocessConfig(spacing=(6.0, 6.0, 6.0)), roi_size=(32, 32, 32))
    return save_package(build_segmenter(spec, 2), package, path)


def tiny_checkpoint(path: Path) -> Path:
    """A randomly initialised small-recipe VoCo training checkpoint, as pretraining writes it."""
    from vococore.pretraining.model import VoCoModel
    from vococore.pretraining.pretext import RECIPES, default_backbone
    from vococore.training.checkpoint import build_checkpoint, save_checkpoint

    torch.manual_seed(0)
    spec = default_backbone(RECIPES["small"])
    model = VoCoModel(spec, RECIPES["small"])
    return save_checkpoint(path, build_checkpoint(0, model, backbone=spec, recipe=RECIPES["small"]))


def build(root: Path, fetch) -> dict[str, Path]:
    """Write every corpus input under ``root``; returns name -> path."""
    p: dict[str, Path] = {}
    inputs = root / "inputs"
    inputs.mkdir()
    ct_src = fetch("TotalSegCTSmall")
    p["ct"] = inputs / "ct.nii.gz"
    shutil.copy(ct_src, p["ct"])
    p["labels"] = inputs / "labels.nii.gz"
    shutil.copy(fetch("TotalSegCTSmallLabels"), p["labels"])
    ct = nib.load(str(ct_src))
    data = np.asarray(ct.dataobj)
    block = data[40:56, 40:56, 10:26].astype(np.int16)  # 16³ of real CT for the header cases
    good = ct_src.read_bytes()

    p["missing"] = inputs / "does_not_exist.nii.gz"
    p["truncated"] = inputs / "truncated.nii.gz"
    p["truncated"].write_bytes(good[: len(good) // 3])
    p["empty_file"] = inputs / "empty.nii"
    p["empty_file"].write_bytes(b"")
    p["gzip_garbage"] = inputs / "garbage.nii.gz"
    with gzip.open(p["gzip_garbage"], "wb") as fh:
        fh.write(b"\x00" * 100)
    p["text_as_nifti"] = inputs / "notes.nii.gz"
    p["text_as_nifti"].write_text("this is not an image\n")
    p["png"] = inputs / "scan.png"
    p["png"].write_bytes(b"\x89PNG\r\n\x1a\n")
    p["empty_dir"] = inputs / "empty_folder"
    p["empty_dir"].mkdir()
    p["no_dicom"] = inputs / "no_dicom"
    p["no_dicom"].mkdir()
    (p["no_dicom"] / "notes.txt").write_text("not an image")
    p["slice2d"] = _nifti(inputs / "slice.nii.gz", block[:, :, 0])
    p["flat"] = _nifti(inputs / "flat.nii.gz", block[:, :, :1])
    p["4d"] = _nifti(inputs / "series.nii.gz", np.stack([block] * 3, axis=-1))
    nan = block.astype(np.float32)
    nan[2, 3, 4] = np.nan
    p["nan"] = _nifti(inputs / "nan.nii.gz", nan)
    p["zero_pixdim"] = _nifti(inputs / "zero_pixdim.nii.gz", block, x=0.0)
    p["neg_pixdim"] = _nifti(inputs / "neg_pixdim.nii.gz", block, y=-2.0)
    p["nan_pixdim"] = _nifti(inputs / "nan_pixdim.nii.gz", block, z=np.nan)
    shear = np.eye(4)
    shear[0, 1] = 0.5
    p["shear"] = _nifti(inputs / "shear.nii.gz", block, shear)
    img = nib.Nifti1Image(block, np.eye(4))
    mirrored = np.diag([-1.0, 1.0, 1.0, 1.0])
    img.set_qform(mirrored, 1)
    img.set_sform(np.eye(4), 1)
    p["qform_sform"] = inputs / "qform_sform.nii.gz"
    nib.save(img, str(p["qform_sform"]))
    no_xform = nib.Nifti1Image(data, ct.affine)  # the whole real CT with qform_code = sform_code = 0
    no_xform.set_qform(None, code=0)
    no_xform.set_sform(None, code=0)
    p["no_xform"] = inputs / "no_orientation.nii.gz"
    nib.save(no_xform, str(p["no_xform"]))
    labels = nib.load(str(p["labels"]))
    no_xform = nib.Nifti1Image(np.asarray(labels.dataobj), labels.affine)
    no_xform.set_qform(None, code=0)
    no_xform.set_sform(None, code=0)
    p["no_xform_labels"] = inputs / "no_orientation_labels.nii.gz"
    nib.save(no_xform, str(p["no_xform_labels"]))
    huge = np.eye(4)
    huge[0, 0] = 4000.0
    p["huge_spacing"] = _nifti(inputs / "huge_spacing.nii.gz", block, huge)
    lps = "space: left-posterior-superior\nspace origin: (0,0,0)\nkinds: domain domain domain"
    p["nrrd_garbage"] = inputs / "bad.nrrd"
    p["nrrd_garbage"].write_bytes(b"NRRD0004\ngarbage\n")
    p["nrrd_zero_dir"] = _nrrd(inputs / "zero_dir.nrrd", block, f"{lps}\nspace directions: (0,0,0) (0,1,0) (0,0,1)")
    p["nrrd_shear"] = _nrrd(inputs / "shear.nrrd", block, f"{lps}\nspace directions: (1,0,0) (0.7,0.7,0) (0,0,1)")
    p["nrrd_short"] = _nrrd(inputs / "short.nrrd", block, f"{lps}\nspace directions: (1,0,0) (0,1,0) (0,0,1)")
    p["nrrd_short"].write_bytes(p["nrrd_short"].read_bytes()[:-3000])
    p["nrrd_rgb"] = inputs / "rgb.nrrd"
    rgb = np.stack([block] * 3)
    p["nrrd_rgb"].write_bytes(
        ("NRRD0004\ntype: short\ndimension: 4\nsizes: 3 16 16 16\nencoding: raw\nendian: little\n"
         "space: left-posterior-superior\nspace directions: none (1,0,0) (0,1,0) (0,0,1)\n"
         "kinds: vector domain domain domain\n\n").encode() + np.asfortranarray(rgb.astype("<i2")).tobytes("F"))
    p["mhd_no_raw"] = _mhd(inputs / "no_raw.mhd", block, "ElementSpacing = 1 1 1", raw="missing.raw")
    p["mha_nan_spacing"] = _mhd(inputs / "nan_spacing.mhd", block, "ElementSpacing = 1 nan 1")

    dicom = fetch("TotalSegDICOM")
    p["dicom"] = inputs / "dicom"
    _dicom_copy(dicom, p["dicom"])
    files = _dicom_copy(dicom, inputs / "dicom_truncated")
    files[5].write_bytes(files[5].read_bytes()[:400])
    p["dicom_truncated"], p["dicom_truncated_file"] = inputs / "dicom_truncated", files[5]
    files = _dicom_copy(dicom, inputs / "dicom_missing")
    files[5].unlink()
    p["dicom_missing"] = inputs / "dicom_missing"
    files = _dicom_copy(dicom, inputs / "dicom_duplicate")
    shutil.copy(files[5], files[5].parent / "copy_of_slice.dcm")
    p["dicom_duplicate"] = inputs / "dicom_duplicate"
    files = _dicom_copy(dicom, inputs / "dicom_no_uid")
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.SeriesInstanceUID
        ds.save_as(f)
    p["dicom_no_uid"] = inputs / "dicom_no_uid"

    p["package"] = tiny_package(inputs / "tiny.vocomodel")
    p["checkpoint"] = tiny_checkpoint(inputs / "pretrain.pt")
    p["evil"] = inputs / "evil.pt"
    torch.save({"model": Evil(), "backbone": {}, "recipe": "small"}, p["evil"])
    p["truncated_ckpt"] = inputs / "truncated.pt"
    p["truncated_ckpt"].write_bytes(p["checkpoint"].read_bytes()[:5000])
    p["truncated_package"] = inputs / "truncated.vocomodel"
    p["truncated_package"].write_bytes(p["package"].read_bytes()[:3000])
    p["garbage_package"] = inputs / "garbage.vocomodel"
    p["garbage_package"].write_bytes(os.urandom(2048))
    p["plain_dict"] = inputs / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, p["plain_dict"])

    p["float_labels"] = _nifti(inputs / "float_labels.nii.gz", block.astype(np.float32) / 7)
    p["many_labels"] = _nifti(inputs / "many_labels.nii.gz", (data.astype(np.int32) + 1100).clip(0, None),
                              ct.affine)
    p["label_table_bad"] = inputs / "labels_bad.json"
    p["label_table_bad"].write_text('{"liver": 5}')
    p["label_table_broken"] = inputs / "labels_broken.json"
    p["label_table_broken"].write_text('{"5": "liver"')
    p["config_missing"] = inputs / "missing.yaml"
    p["config_broken"] = inputs / "broken.yaml"
    p["config_broken"].write_text("steps: [1, 2\nbatch_size: 2\n")
    p["config_list"] = inputs / "list.yaml"
    p["config_list"].write_text("- 1\n- 2\n")
    p["a_file"] = inputs / "a_file.txt"
    p["a_file"].write_text("a file where a folder is expected\n")
    p["out"] = root / "out"
    p["out"].mkdir()
    p["existing"] = p["out"] / "exists.nii.gz"
    p["existing"].write_bytes(b"keep me")
    p["dir_named_file"] = p["out"] / "folder.nii.gz"
    p["dir_named_file"].mkdir()
    return p


def small_filesystems(root: Path) -> dict[str, Path] | None:
    """A read-only tmpfs and a full one (needs root and mount); None where they cannot be made."""
    ro, full = root / "readonly", root / "full"
    ro.mkdir()
    full.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(ro)], check=True,
                       capture_output=True)
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True, capture_output=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        unmount([ro, full])
        return None
    fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT)  # fill it up to the last block
    try:
        while os.write(fd, b"\0" * 1024):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return {"readonly": ro, "full": full}


def unmount(paths: list[Path]) -> None:
    for path in paths:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)  # lazy: a child may hold a file open


def mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` (mount's syntax, e.g. 128m) on ``path``; False where that needs root we lack."""
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def shrink_tmpfs(path: Path, free_bytes: int) -> None:
    """Resize the tmpfs on ``path`` to what it holds now plus ``free_bytes``: later writes beyond that fail."""
    st = os.statvfs(path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    subprocess.run(["mount", "-o", f"remount,size={(used + free_bytes) // 1024}k", str(path)], check=True,
                   capture_output=True)
