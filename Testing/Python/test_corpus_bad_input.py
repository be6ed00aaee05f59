"""The bad-input corpus: every mistake a user can make with a ``vococore`` command gets exit status 2 and exactly
one error line naming the file or value and the cause, no traceback, every input byte for byte unchanged, and no
file written. Cases run as real processes (forked from a warm interpreter, see cli_zygote.py); a few also run
through the installed ``vococore`` script to show that the two agree."""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_zygote import warm_cli
from corpus_inputs import build, mount_tmpfs, shrink_tmpfs, small_filesystems, unmount

# (id, command line with {input} names from corpus_inputs.build, expected cause, what the line must name)
CASES = [
    # info: damaged files, lying headers, broken DICOM series
    ("info-missing", "info {missing}", "no such file", "{missing}"),
    ("info-truncated", "info {truncated}", "damaged or truncated", "{truncated}"),
    ("info-empty-file", "info {empty_file}", "damaged or truncated", "{empty_file}"),
    ("info-gzip-garbage", "info {gzip_garbage}", "cannot read NIfTI", "{gzip_garbage}"),
    ("info-text-as-nifti", "info {text_as_nifti}", "cannot read NIfTI", "{text_as_nifti}"),
    ("info-png", "info {png}", "unknown file type", "{png}"),
    ("info-empty-folder", "info {empty_dir}", "folder is empty", "{empty_dir}"),
    ("info-no-dicom", "info {no_dicom}", "no DICOM series", "{no_dicom}"),
    ("info-2d", "info {slice2d}", "2D image", "{slice2d}"),
    ("info-flat", "info {flat}", "2D image", "{flat}"),
    ("info-4d", "info {4d}", "4D image", "{4d}"),
    ("info-nan", "info {nan}", "1 NaN or infinite voxels", "{nan}"),
    ("info-zero-pixdim", "info {zero_pixdim}", "not positive and finite", "{zero_pixdim}"),
    ("info-negative-pixdim", "info {neg_pixdim}", "not positive and finite", "{neg_pixdim}"),
    ("info-nan-pixdim", "info {nan_pixdim}", "not positive and finite", "{nan_pixdim}"),
    ("info-shear", "info {shear}", "direction is not a rotation", "{shear}"),
    ("info-qform-sform", "info {qform_sform}", "qform and sform disagree", "{qform_sform}"),
    ("info-no-orientation", "info {no_xform}", "carries no orientation", "{no_xform}"),
    ("info-huge-resample", "info {huge_spacing}", "would resample to 42667x11x11 voxels", "{huge_spacing}"),
    ("info-nrrd-garbage", "info {nrrd_garbage}", "cannot read image", "{nrrd_garbage}"),
    ("info-nrrd-zero-direction", "info {nrrd_zero_dir}", "zero", "{nrrd_zero_dir}"),
    ("info-nrrd-shear", "info {nrrd_shear}", "not a rotation", "{nrrd_shear}"),
    ("info-nrrd-truncated", "info {nrrd_short}", "cannot read image", "{nrrd_short}"),
    ("info-nrrd-rgb", "info {nrrd_rgb}", "3 components per voxel", "{nrrd_rgb}"),
    ("info-mhd-no-raw", "info {mhd_no_raw}", "cannot read image", "{mhd_no_raw}"),
    ("info-mhd-nan-spacing", "info {mha_nan_spacing}", "spacing", "{mha_nan_spacing}"),
    ("info-dicom-damaged-slice", "info {dicom_truncated}", "could not be read", "{dicom_truncated_name}"),
    ("info-dicom-missing-slice", "info {dicom_missing}", "missing slice", "{dicom_missing}"),
    ("info-dicom-duplicate-slice", "info {dicom_duplicate}", "duplicated slice", "copy_of_slice.dcm"),
    ("info-dicom-wrong-uid", "info {dicom} --series-uid 1.2.3", "not in this folder", "1.2.3"),
    ("info-dicom-no-uid-wrong-pick", "info {dicom_no_uid} --series-uid 9.9", "(no SeriesInstanceUID)", "9.9"),
    ("info-bad-option", "info {ct} --jsn", "unrecognized arguments", "--jsn"),
    # sample-data
    ("sample-unknown", "sample-data NoSuchData", "unknown", "NoSuchData"),
    # infer: options
    ("infer-roi-zero", "infer --model {package} --input {ct} --output {out}/a.nii.gz --roi 0 32 32", "at least 1",
     "--roi"),
    ("infer-roi-text", "infer --model {package} --input {ct} --output {out}/a.nii.gz --roi a 32 32",
     "whole number", "--roi"),
    ("infer-roi-multiple", "infer --model {package} --input {ct} --output {out}/a.nii.gz --roi 33 32 32",
     "multiple of 16", "--roi 33 32 32"),
    ("infer-overlap-one", "infer --model {package} --input {ct} --output {out}/a.nii.gz --overlap 1", "[0, 1)",
     "--overlap"),
    ("infer-overlap-nan", "infer --model {package} --input {ct} --output {out}/a.nii.gz --overlap nan",
     "finite", "--overlap"),
    ("infer-batch-zero", "infer --model {package} --input {ct} --output {out}/a.nii.gz --sw-batch-size 0",
     "at least 1", "--sw-batch-size"),
    ("infer-device-name", "infer --model {package} --input {ct} --output {out}/a.nii.gz --device gpu",
     "auto, cpu, cuda", "gpu"),
    ("infer-format", "infer --model {package} --input {ct} --output {out} --format .png", "invalid choice",
     ".png"),
    # infer: model files
    ("infer-model-missing", "infer --model {missing} --input {ct} --output {out}/a.nii.gz", "not found",
     "{missing}"),
    ("infer-model-is-checkpoint", "infer --model {checkpoint} --input {ct} --output {out}/a.nii.gz",
     "is a torch checkpoint, not a model package", "{checkpoint}"),
    ("infer-model-garbage", "infer --model {garbage_package} --input {ct} --output {out}/a.nii.gz",
     "not a model package", "{garbage_package}"),
    ("infer-model-truncated", "infer --model {truncated_package} --input {ct} --output {out}/a.nii.gz",
     "not a model package", "{truncated_package}"),
    # infer: inputs and outputs
    ("infer-input-missing", "infer --model {package} --input {missing} --output {out}/a.nii.gz", "no such file",
     "{missing}"),
    ("infer-input-truncated", "infer --model {package} --input {truncated} --output {out}/a.nii.gz",
     "damaged or truncated", "{truncated}"),
    ("infer-input-shear", "infer --model {package} --input {shear} --output {out}/a.nii.gz", "not a rotation",
     "{shear}"),
    ("infer-input-no-orientation", "infer --model {package} --input {no_xform} --output {out}/a.nii.gz",
     "neither qform nor sform", "{no_xform}"),
    ("infer-input-dicom-duplicate", "infer --model {package} --input {dicom_duplicate} --output {out}/a.nii.gz",
     "duplicated slice", "{dicom_duplicate}"),
    ("infer-output-is-input", "infer --model {package} --input {ct} --output {ct} --overwrite", "is the input",
     "{ct}"),
    ("infer-output-is-model", "infer --model {package} --input {ct} --output {package} --overwrite",
     "is a file", "{package}"),
    ("infer-output-in-input-dicom", "infer --model {package} --input {dicom} --output {dicom}/seg.nii.gz",
     "is the input", "{dicom}"),
    ("infer-output-exists", "infer --model {package} --input {ct} --output {existing}", "already exists",
     "{existing}"),
    ("infer-output-is-folder", "infer --model {package} --input {ct} --output {dir_named_file} --overwrite",
     "is a folder", "{dir_named_file}"),
    ("infer-output-under-file", "infer --model {package} --input {ct} --output {a_file}/seg.nii.gz",
     "is a file", "{a_file}"),
    ("infer-output-readonly", "infer --model {package} --input {ct} --output {readonly}/seg.nii.gz",
     "Read-only file system", "{readonly}"),
    ("infer-output-full", "infer --model {package} --input {ct} --output {full}/seg.nii.gz",
     "No space left on device", "{full}"),
    # evaluate
    ("evaluate-pred-is-ct", "evaluate --pred {ct} --ref {labels}", "negative values", "{ct}"),
    ("evaluate-ref-is-ct", "evaluate --pred {labels} --ref {ct}", "negative values", "{ct}"),
    ("evaluate-pred-float", "evaluate --pred {float_labels} --ref {labels}", "non-integer", "{float_labels}"),
    ("evaluate-many-labels", "evaluate --pred {many_labels} --ref {labels}", "distinct values",
     "{many_labels}"),
    ("evaluate-ref-no-orientation", "evaluate --pred {labels} --ref {no_xform_labels}",
     "carries no orientation", "{no_xform_labels}"),
    ("evaluate-ref-missing", "evaluate --pred {labels} --ref {missing}", "no such file", "{missing}"),
    ("evaluate-negative-label", "evaluate --pred {labels} --ref {labels} --labels -1", "0..65535", "--labels"),
    ("evaluate-map-syntax", "evaluate --pred {labels} --ref {labels} --map 1-5", "FROM:TO", "--map"),
    ("evaluate-map-twice", "evaluate --pred {labels} --ref {labels} --map 1:5 1:6", "twice", "--map"),
    ("evaluate-table-missing", "evaluate --pred {labels} --ref {labels} --label-table {missing}",
     "cannot read label table", "{missing}"),
    ("evaluate-table-ids", "evaluate --pred {labels} --ref {labels} --label-table {label_table_bad}",
     "whole-number ids", "{label_table_bad}"),
    ("evaluate-table-broken", "evaluate --pred {labels} --ref {labels} --label-table {label_table_broken}",
     "cannot read label table", "{label_table_broken}"),
    ("evaluate-pred-labels-garbage", "evaluate --pred {labels} --ref {labels} --pred-labels {garbage_package}",
     "not a model package", "{garbage_package}"),
    # position
    ("position-model-is-package", "position --model {package} --input {ct} --output {out}/pos",
     "is a model package", "{package}"),
    ("position-model-unsafe", "position --model {evil} --input {ct} --output {out}/pos",
     "refuses to unpickle: the file asks for posix.system", "{evil}"),
    ("position-model-truncated", "position --model {truncated_ckpt} --input {ct} --output {out}/pos",
     "not a torch file", "{truncated_ckpt}"),
    ("position-model-plain", "position --model {plain_dict} --input {ct} --output {out}/pos",
     "not a VoCo pretraining checkpoint", "{plain_dict}"),
    ("position-model-missing", "position --model {missing} --input {ct} --output {out}/pos", "not found",
     "{missing}"),
    ("position-point-nan", "position --model {checkpoint} --input {ct} --output {out}/pos --point nan 0 0",
     "finite", "--point"),
    ("position-random-negative", "position --model {checkpoint} --input {ct} --output {out}/pos --random -1",
     "at least 0", "--random"),
    ("position-output-is-input", "position --model {checkpoint} --input {dicom} --output {dicom}/pos --random 1",
     "is the input", "{dicom}"),
    ("position-output-is-file", "position --model {checkpoint} --input {ct} --output {a_file} --random 1",
     "is a file", "{a_file}"),
    ("position-input-nan-pixdim", "position --model {checkpoint} --input {nan_pixdim} --output {out}/pos "
     "--random 1", "not positive and finite", "{nan_pixdim}"),
    ("position-output-readonly", "position --model {checkpoint} --input {ct} --output {readonly}/pos --random 1",
     "Read-only file system", "{readonly}"),
    # export-encoder
    ("export-unsafe", "export-encoder {evil} {out}/enc.pt", "refuses to unpickle: the file asks for posix.system",
     "{evil}"),
    ("export-package", "export-encoder {package} {out}/enc.pt", "is a model package", "{package}"),
    ("export-cnn", "export-encoder {checkpoint} {out}/enc.pt", "only swin checkpoints", "{checkpoint}"),
    ("export-output-is-input", "export-encoder {checkpoint} {checkpoint} --overwrite", "is the input",
     "{checkpoint}"),
    ("export-output-exists", "export-encoder {checkpoint} {existing}", "already exists", "{existing}"),
    ("export-output-full", "export-encoder {checkpoint} {full}/enc.pt", "No space left on device", "{full}"),
    # pretrain and finetune: configs and output folders, refused before any data is read
    ("pretrain-config-missing", "pretrain --config {config_missing}", "not found", "{config_missing}"),
    ("pretrain-config-broken", "pretrain --config {config_broken}", "YAML", "{config_broken}"),
    ("pretrain-config-list", "pretrain --config {config_list}", "mapping", "{config_list}"),
    ("pretrain-set-syntax", "pretrain --config pretrain_small --set steps", "KEY=VALUE", "steps"),
    ("pretrain-set-yaml", "pretrain --config pretrain_small --set steps=[1", "not valid YAML", "steps"),
    ("pretrain-set-type", "pretrain --config pretrain_small --set steps=many", "steps", "many"),
    ("pretrain-stop-after", "pretrain --config pretrain_small --stop-after 0", "at least 1", "--stop-after"),
    ("pretrain-output-is-file", "pretrain --config pretrain_small --set output_dir={a_file}", "is a file",
     "{a_file}"),
    ("pretrain-output-readonly", "pretrain --config pretrain_small --set output_dir={readonly}/run",
     "Read-only file system", "{readonly}"),
    ("pretrain-resume-unsafe", "pretrain --config pretrain_small --set output_dir={out}/run --resume {evil}",
     "refuses to unpickle", "{evil}"),
    ("pretrain-data-no-orientation", "pretrain --config pretrain_small --set output_dir={out}/run "
     "'data=[{ct}, {no_xform}]'", "carries no orientation", "{no_xform}"),
    ("finetune-roi-too-small", "finetune --config finetune_small --set output_dir={out}/ft 'roi_size=[16, 16, 16]'",
     "multiple of 16 of at least 32", "roi_size [16, 16, 16]"),
    ("finetune-config-missing", "finetune --config {config_missing}", "not found", "{config_missing}"),
    ("finetune-output-is-file", "finetune --config finetune_small --set output_dir={a_file}", "is a file",
     "{a_file}"),
    ("finetune-output-full", "finetune --config finetune_small --set output_dir={full}/run",
     "No space left on device", "{full}"),
]
# Run through the installed console script as well (cheap ones and one that loads a model).
VIA_SCRIPT = {"info-truncated", "infer-roi-zero", "evaluate-map-syntax", "position-model-unsafe"}
NEEDS_FS = ("readonly", "full")


def _digests(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sample):
    root = tmp_path_factory.mktemp("corpus")
    paths = {k: str(v) for k, v in build(root, sample).items()}
    paths["dicom_truncated_name"] = Path(paths["dicom_truncated_file"]).name
    filesystems = small_filesystems(root)
    if filesystems:
        paths.update({k: str(v) for k, v in filesystems.items()})
    try:
        yield root, paths
    finally:
        if filesystems:
            unmount(list(filesystems.values()))


def _run(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    proc = warm_cli().run(argv, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def test_corpus_is_large_and_covers_every_command():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
    commands = {c[1].split()[0] for c in CASES}
    assert commands == {"info", "sample-data", "infer", "evaluate", "position", "export-encoder", "pretrain",
                        "finetune"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line(corpus, case, tmp_path):
    root, paths = corpus
    name, command, cause, named = case
    if any("{" + fs + "}" in command for fs in NEEDS_FS) and "readonly" not in paths:
        pytest.skip("a read-only or full tmpfs needs root and mount on this machine")
    argv = shlex.split(command.format(**paths))
    before = _digests(root)
    rc, stdout, stderr = _run(argv, tmp_path)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc == 2, (name, rc, stderr[-2000:])
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, (name, lines)
    assert cause in lines[0], (name, lines[0])
    assert named.format(**paths) in lines[0], (name, lines[0])
    assert lines[0].startswith(f"vococore {argv[0]}: error: "), lines[0]
    after = _digests(root)
    assert after == before, (name, set(after) ^ set(before), [k for k in before if after.get(k) != before[k]])
    assert not any(p.name.endswith(".tmp") or ".tmp." in p.name for p in root.rglob("*")), name
    if name in VIA_SCRIPT:
        script = shutil.which("vococore", path=str(Path(sys.executable).parent))
        proc = subprocess.run([script, *argv], capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert (proc.returncode, proc.stderr.strip()) == (rc, lines[0]), name


# A training run whose disk fills up at a checkpoint: the first call writes checkpoints/last.pt, then the tmpfs is
# shrunk to leave half a checkpoint free (config, metrics and the write probe still fit), and the resumed call
# fails writing the next one. (command, first call, second call)
TRAINING_RUNS = {
    "pretrain": ("pretrain --config pretrain_small --set output_dir={run} steps=2 checkpoint_every=1 "
                 "tensorboard=false 'data=[sample:TotalSegCTSmall, sample:TotalSegCTSmall]'",
                 "--stop-after 1", "--resume"),
    "finetune": ("finetune --config finetune_small --set output_dir={run} train.checkpoint_every=1 "
                 "train.val_every=100 'data.images=[sample:TotalSegCTSmall]' "
                 "'data.labels=[sample:TotalSegCTSmallLabels]'", "--set train.steps=1",
                 "--set train.steps=2 --resume"),
}


@pytest.mark.parametrize("kind", sorted(TRAINING_RUNS))
def test_disk_full_at_checkpoint_keeps_last(corpus, kind, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not mount_tmpfs(disk, "128m"):
        pytest.skip("a tmpfs needs root and mount on this machine")
    try:
        command, first, second = TRAINING_RUNS[kind]
        run = disk / "run"
        rc, _, stderr = _run(shlex.split(f"{command.format(run=run)} {first}"), tmp_path)
        assert rc == 0, stderr[-2000:]
        last = run / "checkpoints" / "last.pt"
        kept = hashlib.sha256(last.read_bytes()).hexdigest()
        shrink_tmpfs(disk, last.stat().st_size // 2)
        rc, _, stderr = _run(shlex.split(f"{command.format(run=run)} {second}"), tmp_path)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert rc == 2 and "Traceback" not in stderr, (rc, stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith(f"vococore {kind}: error: {last}: "), lines
        assert "no space left on device" in lines[0].lower(), lines[0]
        assert hashlib.sha256(last.read_bytes()).hexdigest() == kept  # the step-1 checkpoint, whole
        assert [p.name for p in disk.rglob("*") if ".tmp" in p.name] == []
        assert (run / "metrics.jsonl").read_text().count('"step": 2') >= 1  # it failed at the write, not before
    finally:
        unmount([disk])
