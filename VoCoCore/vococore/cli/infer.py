"""``vococore infer``: segment CT files or DICOM series with a model package."""

from __future__ import annotations

import argparse

from vococore.cli.options import check_roi, device, overlap, positive_int

MEMORY_NOTE = """memory: with N input voxels, M voxels after preprocessing (the package's spacing, crop and padding)
and C classes, infer keeps: the input volume and one float32 copy of it while preprocessing; the preprocessed
image (float32, M); the class-score sums (float16, C*M; float32 with --accumulate-dtype float32); the uint8 label
on the preprocessed grid (nearest mode only); a float32 weight map (M); and the uint8 label on the input grid (N),
filled a few input slices at a time: class scores interpolated trilinearly at each voxel's world position, then
argmax (--interpolation linear, MONAI's invert-then-argmax), or the label by nearest neighbour (nearest). It never
holds an all-class float volume at input resolution. On CUDA, preprocessing, windows and this mapping run on the
GPU. The label is written on exactly the input grid (shape and affine)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="segment CT volumes with a model package (.vocomodel)", epilog=MEMORY_NOTE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model package (.vocomodel)")
    p.add_argument("--input", required=True, nargs="+",
                   help="CT files, DICOM series folders, or folders of CT files (each file is one case)")
    p.add_argument("--output", required=True,
                   help="output file (.nii.gz, .nrrd, .seg.nrrd, or .dcm for DICOM SEG) for one case, else a folder")
    p.add_argument("--format", default=".nii.gz", choices=[".nii.gz", ".nrrd", ".seg.nrrd", "dicom-seg"],
                   help="file type written into an output folder (default .nii.gz); dicom-seg (.dcm) needs DICOM "
                        "series inputs and references them")
    p.add_argument("--roi", type=positive_int, nargs=3, metavar=("X", "Y", "Z"), help="window size (default: package's)")
    p.add_argument("--overlap", type=overlap,
                   help="window overlap in [0, 1) (default: package's, 0.5; the official VoCo code uses 0.75)")
    p.add_argument("--blend", default="gaussian", choices=["gaussian", "constant"],
                   help="window blending (official VoCo: constant)")
    p.add_argument("--sw-batch-size", type=positive_int, default=1, help="windows per network call (default 1)")
    p.add_argument("--device", default="auto", type=device, help="auto (CUDA if available), cpu, cuda or cuda:N")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default: on for CUDA, off on CPU)")
    p.add_argument("--accumulate-dtype", default="float16", choices=["float16", "float32"],
                   help="precision of the summed class scores (default float16)")
    p.add_argument("--interpolation", default="linear", choices=["linear", "nearest"],
                   help="onto the input grid: class scores trilinear then argmax (default), or the label nearest")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--json-progress", action="store_true", help="print JSON progress lines on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vococore.segmentation.inference import InferenceOptions, plan_outputs, segment_files
    from vococore.segmentation.package import read_package_info
    from vococore.utils.atomic import refuse_inputs_as_outputs
    from vococore.utils.progress import Progress

    suffix = ".dcm" if args.format == "dicom-seg" else args.format
    inputs, outputs = plan_outputs(args.input, args.output, suffix)
    refuse_inputs_as_outputs([args.model, *inputs], outputs)
    check_roi(args.roi, read_package_info(args.model).backbone.arch, args.model)
    options = InferenceOptions(roi_size=tuple(args.roi) if args.roi else None, overlap=args.overlap,
                               blend=args.blend, sw_batch_size=args.sw_batch_size, device=args.device,
                               amp=args.amp, accumulate_dtype=args.accumulate_dtype,
                               interpolation=args.interpolation)
    bar = Progress("infer", total=100 * len(inputs), json_lines=args.json_progress)
    written = segment_files(args.model, inputs, outputs, options, overwrite=args.overwrite,
                            progress=lambda case, fraction: bar.update(int(100 * (case + fraction))))
    bar.close(cases=len(written))
    if not args.json_progress:
        print("\n".join(map(str, written)))
    return 0
