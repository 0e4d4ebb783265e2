"""``quantif predict``: one case (``--ct/--pet/--out``) or a folder (``-i/-o``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError, InputFileError
from ..io import check_output_path
from ..quantify import lesion_csv_path, write_lesion_csv_beside
from .argtypes import (
    add_heatmap_arguments,
    add_nonfinite_argument,
    nonfinite_mode,
    nonneg_float,
    nonneg_int,
)
from .prediction_options import (
    add_isocontour_argument,
    add_postprocess_clicked_argument,
    add_prediction_arguments,
    pipeline_options,
)
from .prediction_options import add_model_arguments as _add_models
from .vocabulary import add_option


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Model, routing, mirroring and post-processing options shared by ``predict`` and ``gc``.

    The model and prediction options are those of :mod:`.prediction_options` (shared with
    ``evaluate-interactive`` and ``nnUNetv2_predict_quantif``).
    """
    _add_models(p)
    m = p.add_argument_group("prediction")
    add_prediction_arguments(m)
    m.add_argument("--postprocess", dest="postprocess", action="store_true", default=None,
                   help="remove small faint components (default: the model's recorded choice, else on)")
    m.add_argument("--no-postprocess", dest="postprocess", action="store_false", help="keep small faint components")
    m.add_argument("--min-voxels", type=nonneg_int, default=None,
                   help="post-processing size threshold (voxels; default: the model's, else 10)")
    m.add_argument("--suv-max", type=nonneg_float, default=None,
                   help="post-processing SUVmax threshold (default: the model's, else 4)")
    m.add_argument("--min-volume-ml", type=nonneg_float, default=None,
                   help="post-processing size threshold in ml instead of voxels")
    add_isocontour_argument(m)
    add_postprocess_clicked_argument(m)
    add_nonfinite_argument(m)
    add_heatmap_arguments(p.add_argument_group(
        "heatmap", "by default each model builds its heatmap with the definition recorded in its dataset.json"))


def build_pipeline(args: argparse.Namespace, progress: bool = False):
    """A :class:`~nnunet_quantif.inference.pipeline.QuantIFPipeline` from parsed arguments
    (:func:`~nnunet_quantif.model_set.build_pipeline` of :func:`.prediction_options.pipeline_options`)."""
    from ..model_set import build_pipeline as build

    return build(pipeline_options(args), progress=progress)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment lesions in one case (--ct/--pet/--out) or a folder (-i/-o)",
        description="Click-guided lesion segmentation: grid check, click heatmap, tracer routing, nnU-Net "
                    "prediction with time-adaptive mirroring, post-processing; writes a uint8 0/1 mask with the "
                    "input geometry (.nii.gz or .mha by the output's ending).",
    )
    one = p.add_argument_group("one case")
    one.add_argument("--ct", metavar="CT", help="CT image (HU) on the PET grid, or a DICOM CT series folder "
                                                "(resampled onto the PET grid)")
    one.add_argument("--pet", metavar="PET", help="PET image (SUV), or a DICOM PET series folder (SUVbw from the "
                                                  "header; its radiopharmaceutical sets --tracer auto)")
    one.add_argument("--clicks", metavar="JSON", help="click file (either JSON form); missing/empty = no clicks")
    one.add_argument("--out", metavar="MASK", help="output mask (.nii.gz, .nii or .mha)")
    batch = p.add_argument_group("folder")
    batch.add_argument("-i", "--input", metavar="DIR",
                       help="autoPET layout (imagesTr/<case>_0000,_0001 + clicks/<case>_clicks.json) or flat folder")
    batch.add_argument("-o", "--output", metavar="DIR", help="output folder (<case><ending>)")
    batch.add_argument("--overwrite", action="store_true", help="redo cases whose output exists")
    batch.add_argument("--fail-fast", action="store_true",
                       help="stop at the first failed case (default: go on, record each failure in "
                            "OUT/.quantif_status/<case>.json and exit 1 at the end)")
    batch.add_argument("--output-ending", choices=(".nii.gz", ".nii", ".mha"), default=None,
                       help="ending of batch outputs (default: the CT's)")
    add_option(p, "--click-step", aliases=["--step"], dest="step", type=int, default=None, metavar="K",
                   help="use the first K tumor and K background clicks (default: all)")
    p.add_argument("--stats", action="store_true",
                   help="also write <case>_lesions.csv beside each written mask: the per-lesion table of "
                        "'quantif stats' (MTV, SUVmax, SUVmean, SUVpeak, TLG, centroid)")
    add_model_arguments(p)
    from ..dicom import OUTPUT_TYPES
    from .dicom_options import add_dicom_arguments

    add_dicom_arguments(p)
    one.add_argument("--output-type", choices=OUTPUT_TYPES, default=None,
                     help="nifti, mha (default: by the --out ending), dicom-seg: a DICOM Segmentation file "
                          "(--out X.dcm) referencing the PET series (--pet must be a DICOM folder), or rtstruct: an "
                          "RT Structure Set (--out X.dcm) on the PET series, one ROI per lesion")
    one.add_argument("--per-lesion", action="store_true",
                     help="dicom-seg: one segment per lesion (18-connected) instead of one 'lesion' segment")
    one.add_argument("--sr", action="store_true",
                     help="dicom-seg: also write <out stem>_sr.dcm beside the SEG, a DICOM SR measurement report "
                          "(TID 1500: each lesion's MTV, SUVmax, SUVmean, SUVpeak, TLG, referencing its segment, "
                          "as 'quantif sr'); implies --per-lesion")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.step is not None and args.step < 0:
        raise ConfigError(f"--click-step must be >= 0, got {args.step}")
    single = any(v is not None for v in (args.ct, args.pet, args.out))
    folder = args.input is not None or args.output is not None
    if single == folder:
        raise ConfigError("give either --ct, --pet and --out (one case) or -i and -o (a folder)")
    if single:
        missing = [n for n, v in (("--ct", args.ct), ("--pet", args.pet), ("--out", args.out)) if v is None]
        if missing:
            raise ConfigError(f"one-case mode needs {', '.join(missing)}")
        # every path is checked before the model loads and the case runs
        inputs = [p for p in (args.ct, args.pet, args.clicks) if p is not None]
        from ..dicom import check_output_type, is_dicom_folder, seg_lesion_csv_path

        folders = [p for p in (args.ct, args.pet) if is_dicom_folder(p)]  # DICOM series: no output inside
        seg = check_output_type(args.output_type, args.out, args.pet)
        check_output_path(args.out, image=not seg, inputs=inputs, input_folders=folders)
        csv_path = seg_lesion_csv_path(args.out) if seg else lesion_csv_path(args.out)
        if args.stats:
            check_output_path(csv_path, inputs=inputs, input_folders=folders)
        if args.sr:
            from ..dicom import sr_path_beside

            if args.output_type != "dicom-seg":
                raise ConfigError("--sr needs --output-type dicom-seg (the SR references the SEG's segments)")
            check_output_path(sr_path_beside(args.out), inputs=inputs, input_folders=folders)
        if args.clicks is not None and not Path(args.clicks).is_file():
            what = "is not a file" if Path(args.clicks).exists() else "click file not found"
            raise InputFileError(f"{args.clicks}: {what} (omit --clicks to predict without clicks)")
        import tempfile

        from ..dicom import staged_case
        from .dicom_options import dicom_overrides

        with staged_case(args.ct, args.pet, ct_series=args.ct_series, pet_series=args.pet_series,
                         ignore_ct_mismatch=args.ignore_ct_mismatch, **dicom_overrides(args)) as \
                (ct_path, pet_path, dicom_pet), \
                tempfile.TemporaryDirectory(prefix="quantif-seg-") as seg_tmp:
            tracer = args.tracer
            pipeline = build_pipeline(args, progress=True)
            if tracer == "auto" and dicom_pet is not None and dicom_pet.tracer is not None \
                    and not getattr(pipeline, "single_model", False):  # --model: no routing, no header tracer
                tracer = dicom_pet.tracer  # the header's radiopharmaceutical comes before the classifier
                print(f"tracer {tracer} from the DICOM radiopharmaceutical ({dicom_pet.radiopharmaceutical})")
            if tracer != args.tracer:
                from ..dicom import compare_header_tracer

                compare_header_tracer(pipeline, tracer, pet_path)  # logs a disagreement with the classifier
            if seg:  # the mask is predicted to a temporary NIfTI, then written as a SEG or RTSTRUCT on the PET
                result = _predict_dicom_seg(args, pipeline, ct_path, pet_path, tracer, Path(seg_tmp), csv_path)
            else:
                result = pipeline.predict_case(ct_path, pet_path, args.clicks, args.out, tracer=tracer,
                                               step=args.step)
            print(result.summary_line())
            if result.output is not None:
                print(f"wrote {result.output}")
            if args.stats and not seg:
                print(f"wrote {write_lesion_csv_beside(result.output, pet_path, nonfinite=nonfinite_mode(args))}")
        return 0
    if args.input is None or args.output is None:
        raise ConfigError("folder mode needs both -i and -o")
    if args.output_type is not None or args.per_lesion or args.sr:
        raise ConfigError("--output-type, --per-lesion and --sr are one-case options (--ct/--pet/--out); folder mode "
                          "chooses the ending with --output-ending")
    check_output_path(args.output, folder=True)
    from ..inference.pipeline import scan_cases

    batch_input = scan_cases(args.input)  # refuses orphan images before the model loads
    for path, reason in batch_input.skipped:
        print(f"{path}: skipped, not a case: {reason}")
    pipeline = build_pipeline(args, progress=False)
    results = pipeline.predict_folder(args.input, args.output, tracer=args.tracer, step=args.step,
                                      overwrite=args.overwrite, output_ending=args.output_ending,
                                      on_case=_case_reporter(args, tqdm.write), fail_fast=args.fail_fast)
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "claimed", "failed")}
    print(f"{counts['done']} case(s) predicted, {counts['skipped']} skipped (output existed), "
          f"{counts['claimed']} left to another process, {counts['failed']} failed, "
          f"{len(batch_input.skipped)} input file(s) not a case (listed above) -> {args.output}")
    if counts["failed"]:
        failed = [r.case for r in results if r.status == "failed"]
        print(f"quantif: error: {len(failed)} case(s) failed (errors in {args.output}/.quantif_status/): "
              + ", ".join(failed[:10]) + (" ..." if len(failed) > 10 else ""), file=sys.stderr)
        return 1
    return 0


def _predict_dicom_seg(args: argparse.Namespace, pipeline, ct_path: Path, pet_path: Path, tracer: str,
                       tmp: Path, csv_path: Path):
    """One case with ``--output-type dicom-seg`` or ``rtstruct``: predict into ``tmp``, write the SEG (and
    ``--sr``) or the RT Structure Set, and ``--stats``."""
    from ..dicom import write_dicom_seg
    from ..io import read_image
    from ..quantify import quantify_files, write_csv

    case = Path(args.out).name[:-4] if args.out.lower().endswith(".dcm") else Path(args.out).name
    mask_path = tmp / "mask.nii.gz"
    result = pipeline.predict_case(ct_path, pet_path, args.clicks, mask_path, tracer=tracer, step=args.step,
                                   case_name=case)
    mask, geometry = read_image(mask_path)
    model = getattr(pipeline, "model_dirs", {}).get(getattr(result, "tracer", None))
    if args.output_type == "rtstruct":
        from ..dicom import NoLesionError, write_rtstruct

        try:
            result.output = str(write_rtstruct(mask, geometry, args.pet, args.out, pet_series=args.pet_series,
                                               model_folder=model))
        except NoLesionError:
            print(f"no lesion found: no RT Structure Set written ({Path(args.out).name})")
            result.output = None
    else:
        result.output = str(write_dicom_seg(mask, geometry, args.pet, args.out, pet_series=args.pet_series,
                                            per_lesion=args.per_lesion or args.sr, model_folder=model))
    if args.sr:  # measured from the SEG just written, so each group references a segment that exists
        from ..dicom import NoLesionError, sr_path_beside, write_measurement_report
        from .dicom_options import dicom_overrides

        try:
            report = write_measurement_report(args.out, args.pet, sr_path_beside(args.out),
                                              pet_series=args.pet_series, model_folder=model, **dicom_overrides(args))
            print(f"wrote {report.path} ({len(report.lesions)} lesion(s))")
        except NoLesionError:
            print(f"no lesion found: no SR written ({sr_path_beside(args.out).name})")
    if args.stats:
        stats = quantify_files(mask_path, pet_path, nonfinite=nonfinite_mode(args), case=case)
        print(f"wrote {write_csv(stats, csv_path, inputs=[mask_path, pet_path])}")
    return result


def _case_reporter(args: argparse.Namespace, write):
    """The per-case callback of folder mode: print the summary line; with ``--stats`` also write
    ``<case>_lesions.csv`` beside each mask written in this run."""
    from ..inference.pipeline import find_cases

    pets = {c.name: c.pet for c in find_cases(args.input)} if args.stats else {}

    def report(r) -> None:
        write(r.summary_line())
        if args.stats and r.status == "done" and r.output and not r.skipped:
            write_lesion_csv_beside(r.output, pets[r.case], nonfinite=nonfinite_mode(args))

    return report
