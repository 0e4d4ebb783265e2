"""Turning autoPET-style raw data into per-tracer nnU-Net raw datasets.

Input layout (``src``)
----------------------
::

    imagesTr/<case>_0000.nii.gz    CT (HU)            .nii.gz, .nii or .mha
    imagesTr/<case>_0001.nii.gz    PET (SUV)
    labelsTr/<case>.nii.gz         lesion label, 0/1
    clicks/<case>_clicks.json      clicks (either JSON form); another folder with ``clicks_dir``
    totalseg/<case>_total.nii.gz, totalseg/<case>_head_glands_cavities.nii.gz
                                   optional TotalSegmentator outputs (another folder with ``totalseg_dir``)

The tracer of a case comes from its name prefix (``fdg_``, ``psma_``, any case) or from a CSV
(``case,tracer`` rows, a header line is allowed), which wins over the prefix.

Output (``out`` = an ``nnUNet_raw`` folder)
-------------------------------------------
``Dataset<N>_QuantIFFDG`` and ``Dataset<N+1>_QuantIFPSMA`` (or ``Dataset<N>_QuantIF`` with
``joint=True``), each with::

    imagesTr/<case>_0000.nii.gz    CT        channel "CT"
    imagesTr/<case>_0001.nii.gz    PET SUV   channel "CT" (``pet_norm``; "noNorm" keeps SUV)
    imagesTr/<case>_0002.nii.gz    click heatmap, float32 in [-1, 1], channel "noNorm"
    clicksTr/<case>_clicks.json    the case's clicks in array order (z, y, x) of the written grid
                                   (``{"tumor": [...], "background": [...]}``); nnU-Net ignores this folder
                                   and ``quantif clicks sidefiles`` maps it into preprocessed space for
                                   the click-sampling trainers
    labelsTr/<case>.nii.gz         lesion label, uint8 {0, 1}
    organsTr/<case>.nii.gz         organ-group map 0..14 (lesion voxels 0) when TotalSegmentator
                                   outputs exist for the case; nnU-Net ignores this folder and
                                   ``quantif organs --dataset N`` turns it into training side files
    dataset.json                   channel_names, labels {background: 0, lesion: 1}, numTraining, file_ending,
                                   and the heatmap contract under "quantif"
                                   (:mod:`nnunet_quantif.heatmap_definition`)
    quantif_conversion.json        the options used (a rerun with other options needs ``overwrite``)

PET normalisation
-----------------
``pet_norm="CT"`` (the default) declares the PET channel with nnU-Net's CT normalisation (clip to
the foreground percentiles, z-score with the foreground mean and std), as the authors' plans and
MultiTalent did, so that a MultiTalent stem sees inputs on the scale it was trained on.
``pet_norm="noNorm"`` feeds raw SUV. Post-processing and the tracer classifier read SUV from the
raw PET either way.

All channels and the label are written with the CT's geometry. The heatmap is
:func:`nnunet_quantif.heatmaps.heatmap_from_files` on the case's PET and clicks (all clicks,
or the first ``click_step`` of each kind); a case without a click file gets an all-zero heatmap.

Grids
-----
CT, PET and label must share one grid. With ``resample_pet_to_ct`` a PET on another grid is
resampled linearly onto the CT grid (SimpleITK, outside = 0 SUV); a label on the PET grid is then
resampled with nearest neighbour, and the clicks, which index the PET grid (the autoPET
convention: clicks are simulated from the PET/label pair), are mapped through physical space to
the nearest CT voxel. The heatmap is then :func:`~nnunet_quantif.heatmaps.click_heatmap` on the
resampled PET. Before resampling, the CT must cover enough of the PET
(:func:`nnunet_quantif.io.check_ct_matches_pet`); ``ignore_ct_mismatch`` converts the case anyway and
records the mismatch in its result (``ct_mismatch``, listed by :meth:`ConversionSummary.format`).

Robustness
----------
Each case is written into a private staging folder (``<dataset>/.quantif_staging``) and moved
into place only when all its files are written (label last), so a failing case leaves nothing
behind and never stops the others. A case whose outputs all exist is skipped unless
``overwrite``. ``dataset.json`` is rewritten at the end from the complete cases on disk.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from .clicks import DEFAULT_MAX_CLICKS
from .errors import (
    ConfigError,
    DatasetError,
    GridMismatchError,
    InputFileError,
    OverwriteInputError,
    QuantIFError,
    TracerError,
)
from .io import (
    check_ct_matches_pet,
    check_same_grid,
    ensure_not_input,
    find_image,
    read_image,
    read_pet,
    to_sitk,
    write_image,
    write_json,
)
from .layout import (
    CLICKS_DIR,
    CT_CHANNEL,
    FILE_ENDING,
    HEATMAP_CHANNEL,
    IMAGES_DIR,
    INPUT_CHANNELS,
    LABELS_DIR,
    ORGANS_DIR,
    PET_CHANNEL,
    RAW_CLICKS_DIR,
    TOTALSEG_DIR,
    TRACERS,
    case_names,
    channel_file,
    channel_suffix,
    clicks_file,
    find_channel,
)
from .layout import dataset_name as _dataset_folder_name
from .tracers import read_tracer_csv, tracer_from_name

#: nnU-Net channel names of the three input channels.
CHANNEL_NAMES: dict[str, str] = {str(CT_CHANNEL): "CT", str(PET_CHANNEL): "CT", str(HEATMAP_CHANNEL): "noNorm"}
#: Default normalisation of the PET channel (see the module docstring).
DEFAULT_PET_NORM = "CT"
#: Folder (inside a raw dataset) with the click files ``<case>_clicks.json`` in array order.
CLICKS_FOLDER = RAW_CLICKS_DIR
LABELS: dict[str, int] = {"background": 0, "lesion": 1}
#: Folder (inside a raw dataset) with the organ-group maps ``<case>.nii.gz``.
ORGANS_FOLDER = ORGANS_DIR
MANIFEST = "quantif_conversion.json"
STAGING = ".quantif_staging"


def dataset_name(dataset_id: int, tracer: str | None) -> str:
    """``Dataset<id>_QuantIFFDG`` / ``..._QuantIFPSMA``; ``tracer=None`` gives the joint ``Dataset<id>_QuantIF``."""
    if not 1 <= int(dataset_id) <= 999:
        raise ConfigError(f"dataset id {dataset_id} is outside nnU-Net's range 1..999")
    suffix = "" if tracer is None else tracer.upper()
    return _dataset_folder_name(dataset_id, f"QuantIF{suffix}")


def resolve_tracer(case: str, tracer_map: dict[str, str] | None = None) -> str:
    """The case's tracer ('fdg' or 'psma'), from ``tracer_map`` first, then the name prefix.

    Raises
    ------
    TracerError
        Naming the case when the tracer is unknown.
    """
    if tracer_map and case in tracer_map:
        t = tracer_map[case]
        if t not in TRACERS:
            raise TracerError(f"case '{case}': unknown tracer '{t}' in the tracer CSV (expected one of "
                              f"{', '.join(TRACERS)})")
        return t
    t = tracer_from_name(case)
    if t is None:
        raise TracerError(f"case '{case}': unknown tracer (name does not start with fdg_ or psma_ and the case is "
                          f"not in a tracer CSV; give one with --tracer-csv)")
    return t


def source_case_names(src: str | os.PathLike) -> list[str]:
    """Case names in ``src/imagesTr``: every ``<case>_0000`` or ``<case>_0001`` image, sorted."""
    images = Path(src) / IMAGES_DIR
    if not images.is_dir():
        raise DatasetError(f"{images}: folder not found (expected the autoPET layout {IMAGES_DIR}/, {LABELS_DIR}/, "
                           f"{CLICKS_DIR}/)")
    return case_names(images, (CT_CHANNEL, PET_CHANNEL))


@dataclass
class ConvertedCase:
    """Outcome of converting one case (not the prediction result :class:`~nnunet_quantif.inference.CaseResult`)."""

    case: str
    tracer: str | None
    status: str  # "converted", "skipped" or "failed"
    reason: str = ""
    has_clicks: bool = True
    has_organs: bool = False
    dataset: str | None = None
    ct_mismatch: tuple[str, ...] = ()  # CT/PET mismatches converted anyway (``ignore_ct_mismatch``)


@dataclass
class ConversionSummary:
    """What a :func:`convert_dataset` run did."""

    results: list[ConvertedCase] = field(default_factory=list)
    datasets: dict[str, Path] = field(default_factory=dict)  # dataset name -> folder
    num_training: dict[str, int] = field(default_factory=dict)  # dataset name -> numTraining

    def _by(self, status: str) -> list[ConvertedCase]:
        return [r for r in self.results if r.status == status]

    @property
    def converted(self) -> list[ConvertedCase]:
        return self._by("converted")

    @property
    def skipped(self) -> list[ConvertedCase]:
        return self._by("skipped")

    @property
    def failed(self) -> list[ConvertedCase]:
        return self._by("failed")

    @property
    def without_clicks(self) -> list[ConvertedCase]:
        return [r for r in self.converted if not r.has_clicks]

    @property
    def ok(self) -> bool:
        """True when no case failed."""
        return not self.failed

    def per_tracer(self) -> dict[str, int]:
        """Converted case count per tracer."""
        return dict(Counter(r.tracer for r in self.converted if r.tracer))

    def format(self) -> str:
        """A human-readable multi-line summary."""
        lines = [f"converted {len(self.converted)}, skipped {len(self.skipped)}, failed {len(self.failed)}"]
        for t, n in sorted(self.per_tracer().items()):
            lines.append(f"  {t}: {n} case(s) converted")
        for name, folder in self.datasets.items():
            lines.append(f"  {name}: numTraining {self.num_training.get(name, 0)} ({folder})")
        nc = self.without_clicks
        lines.append(f"cases without a click file (empty heatmap): {len(nc)}")
        lines += [f"  {r.case}" for r in nc]
        no_org = [r for r in self.converted if not r.has_organs]
        lines.append(f"converted cases without an organ map: {len(no_org)}")
        reasons = Counter(r.reason for r in self.skipped)
        for reason, n in sorted(reasons.items()):
            lines.append(f"skipped {n}: {reason}")
        for r in self.converted:
            if r.ct_mismatch:
                lines.append(f"CT mismatch ignored (--ignore-ct-mismatch) {r.case}: " + "; ".join(r.ct_mismatch))
        for r in self.failed:
            lines.append(f"FAILED {r.case}: {r.reason}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# One case
# ---------------------------------------------------------------------------------------------------------------

def _output_paths(dataset_dir: Path, case: str, with_organs: bool) -> dict[str, Path]:
    paths = {channel_suffix(c): channel_file(dataset_dir / IMAGES_DIR, case, c) for c in INPUT_CHANNELS}
    if with_organs:
        paths["organs"] = dataset_dir / ORGANS_FOLDER / f"{case}{FILE_ENDING}"
    paths["label"] = dataset_dir / LABELS_DIR / f"{case}{FILE_ENDING}"  # last: moved into place last
    return paths


def case_is_complete(dataset_dir: Path, case: str) -> bool:
    """Whether all channels and the label of ``case`` exist in ``dataset_dir``."""
    return all(p.is_file() for p in _output_paths(dataset_dir, case, with_organs=False).values())


def _resample_to(image: sitk.Image, reference: sitk.Image, interpolator: int) -> sitk.Image:
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0, image.GetPixelID())


def convert_case(job: dict) -> ConvertedCase:
    """Convert one case (see the module docstring). Never raises: a failure comes back as a failed result.

    ``job`` keys: case, tracer, src, dataset_dir, dataset, clicks_dir, totalseg_dir, click_step,
    resample_pet_to_ct, heatmap_params, and optionally ignore_ct_mismatch, organ_groups, organs_in_label.
    """
    case: str = job["case"]
    res = ConvertedCase(case, job["tracer"], "failed", dataset=job["dataset"])
    try:
        _convert_case(job, res, Path(job["dataset_dir"]) / STAGING)
        res.status = "converted"
    except QuantIFError as e:
        res.reason = str(e)
    except Exception as e:  # noqa: BLE001 - one bad case must not stop the others
        res.reason = f"unexpected {type(e).__name__}: {e}"
    return res


def _convert_case(job: dict, res: ConvertedCase, stage_root: Path) -> None:
    from .heatmaps import click_heatmap, heatmap_from_files

    case: str = job["case"]
    src = Path(job["src"])
    dataset_dir = Path(job["dataset_dir"])
    images, labels = src / IMAGES_DIR, src / LABELS_DIR
    ct_path = find_channel(images, case, CT_CHANNEL)
    pet_path = find_channel(images, case, PET_CHANNEL)
    label_path = find_image(labels, case)
    if ct_path is None:
        raise InputFileError(f"case '{case}': CT missing (expected {channel_file(images, case, CT_CHANNEL)})")
    if pet_path is None:
        raise InputFileError(f"case '{case}': PET missing (expected {channel_file(images, case, PET_CHANNEL)})")
    if label_path is None:
        raise InputFileError(f"case '{case}': label missing (expected {labels / (case + FILE_ENDING)})")
    clicks_path: Path | None = clicks_file(job["clicks_dir"], case) if job["clicks_dir"] else None
    if clicks_path is not None and not clicks_path.is_file():
        clicks_path = None
    res.has_clicks = clicks_path is not None

    ct, ct_geo = read_image(ct_path)
    pet, pet_geo = read_pet(pet_path, (job["heatmap_params"] or {}).get("nonfinite", "raise"))
    label, label_geo = read_image(label_path)
    resampled = False
    try:
        check_same_grid(ct_geo, pet_geo, str(ct_path), str(pet_path))
    except GridMismatchError as e:
        if not job["resample_pet_to_ct"]:
            raise GridMismatchError(f"{e} (use --resample-pet-to-ct to resample the PET onto the CT grid)") from None
        res.ct_mismatch = tuple(check_ct_matches_pet(ct_geo, pet_geo, str(ct_path), str(pet_path),
                                                     ignore=bool(job.get("ignore_ct_mismatch", False))))
        ref = to_sitk(ct, ct_geo)
        pet = sitk.GetArrayFromImage(_resample_to(to_sitk(pet, pet_geo), ref, sitk.sitkLinear)).astype(np.float32)
        resampled = True
    try:
        check_same_grid(ct_geo, label_geo, str(ct_path), str(label_path))
    except GridMismatchError:
        if not resampled:
            raise
        check_same_grid(pet_geo, label_geo, str(pet_path), str(label_path))
        ref = to_sitk(ct, ct_geo)
        label = sitk.GetArrayFromImage(_resample_to(to_sitk(label, label_geo), ref, sitk.sitkNearestNeighbor))
    values = np.unique(label)
    if not np.all(np.isin(values, (0, 1))):
        shown = ", ".join(f"{v:g}" for v in values[:10])
        raise InputFileError(f"{label_path}: lesion label must hold only 0 and 1, found {shown}")
    label = label.astype(np.uint8)

    params = dict(job["heatmap_params"] or {})
    step = job["click_step"]
    from .clicks import clicks_at_step

    max_clicks = job.get("max_clicks", DEFAULT_MAX_CLICKS)
    clicks = clicks_at_step(clicks_path, step, shape=pet_geo.shape, max_clicks=max_clicks)
    if not resampled:
        heat, heat_geo = heatmap_from_files(pet_path, clicks_path, step=step, max_clicks=max_clicks, **params)
        check_same_grid(ct_geo, heat_geo, str(ct_path), str(pet_path))
    else:
        clicks = clicks.mapped(pet_geo, ct_geo)
        heat = click_heatmap(pet, clicks, source=f"{pet_path} (resampled onto {ct_path})", **params)

    organs = None
    ts_dir = job["totalseg_dir"]
    if ts_dir:
        from .organs import organ_map_from_files, totalseg_paths

        if all(p.is_file() for p in totalseg_paths(ts_dir, case).values()):
            organs, _ = organ_map_from_files(ts_dir, case, label, reference=ct_geo, reference_source=str(ct_path),
                                             group_set=job.get("organ_groups", "quantif"))
    res.has_organs = organs is not None
    if job.get("organs_in_label"):
        if organs is None:
            from .organs import totalseg_paths

            wanted = " and ".join(p.name for p in totalseg_paths(ts_dir or ".", case).values())
            raise InputFileError(f"case '{case}': --organs-in-label needs the TotalSegmentator outputs {wanted} in "
                                 f"{ts_dir or '--totalseg'}")
        from .organs import merge_organs_into_label

        label = merge_organs_into_label(label, organs, job.get("organ_groups", "quantif"))

    outputs = _output_paths(dataset_dir, case, with_organs=organs is not None)
    arrays = {channel_suffix(CT_CHANNEL): ct, channel_suffix(PET_CHANNEL): pet,
              channel_suffix(HEATMAP_CHANNEL): heat.astype(np.float32, copy=False), "label": label}
    if organs is not None:
        arrays["organs"] = organs
    inputs = [ct_path, pet_path, label_path] + ([clicks_path] if clicks_path else [])
    stage_root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix="case-", dir=stage_root))
    try:
        staged = {}
        for key, target in outputs.items():
            staged[key] = write_image(arrays[key], ct_geo, stage / key / target.name, inputs=inputs)
        clicks_target = clicks_file(dataset_dir / CLICKS_FOLDER, case)
        staged_clicks = stage / "clicks" / clicks_target.name
        write_json({"tumor": clicks.tumor.tolist(), "background": clicks.background.tolist(),
                    "order": "zyx", "source": str(clicks_path) if clicks_path else None}, staged_clicks)
        clicks_target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged_clicks, clicks_target)
        for key, target in outputs.items():
            ensure_not_input(target, inputs)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged[key], target)
        if organs is None:  # a stale organ map from an earlier run must not outlive its case
            with contextlib.suppress(FileNotFoundError):
                (dataset_dir / ORGANS_FOLDER / f"{case}{FILE_ENDING}").unlink()
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# The whole dataset
# ---------------------------------------------------------------------------------------------------------------

def _complete_cases(dataset_dir: Path) -> list[str]:
    labels = dataset_dir / LABELS_DIR
    if not labels.is_dir():
        return []
    cases = [p.name[: -len(FILE_ENDING)] for p in labels.iterdir() if p.name.endswith(FILE_ENDING)]
    return sorted(c for c in cases if case_is_complete(dataset_dir, c))


def write_dataset_json(dataset_dir: Path, tracer: str | None, quantif: dict | None = None) -> int:
    """Write ``dataset.json`` from the complete cases on disk; return numTraining.

    ``quantif`` is the heatmap contract (:func:`~nnunet_quantif.heatmap_definition.quantif_dataset_entry`;
    default: the default definition with CT-normalised PET); its ``pet_normalization`` sets the PET
    channel's nnU-Net normalisation.

    Image files of incomplete cases (a channel or the label missing) would break nnU-Net's
    case discovery, so they are refused with :class:`DatasetError`.
    """
    complete = set(_complete_cases(dataset_dir))
    images = dataset_dir / IMAGES_DIR
    stray = sorted(set(case_names(images, INPUT_CHANNELS)) - complete) if images.is_dir() else []
    if stray:
        raise DatasetError(f"{dataset_dir}: incomplete cases in {IMAGES_DIR} (a channel or the label is missing): "
                           f"{', '.join(stray[:5])}{' ...' if len(stray) > 5 else ''}; rerun quantif convert "
                           f"or remove them")
    n = len(complete)
    if quantif is None:
        from .heatmap_definition import HeatmapDefinition, quantif_dataset_entry

        quantif = quantif_dataset_entry(HeatmapDefinition(), DEFAULT_PET_NORM)
    channels = dict(CHANNEL_NAMES, **{"1": quantif["pet_normalization"]})
    labels = LABELS
    if quantif.get("organs_in_label"):
        from .organs import dataset_group_set, merged_label_names

        labels = merged_label_names(dataset_group_set({"quantif": quantif}))
    desc = {"fdg": "FDG", "psma": "PSMA", None: "FDG and PSMA"}[tracer]
    write_json({
        "name": dataset_dir.name.split("_", 1)[1],
        "description": f"QuantIF click-guided PET/CT lesion segmentation, {desc} cases (written by quantif convert)",
        "channel_names": channels,
        "labels": labels,
        "numTraining": n,
        "file_ending": FILE_ENDING,
        "tracer": tracer if tracer is not None else "joint",
        "quantif": quantif,
    }, dataset_dir / "dataset.json")
    return n


def _check_dataset_folder(out: Path, name: str) -> None:
    prefix = name.split("_", 1)[0] + "_"
    others = [p.name for p in out.glob(prefix + "*") if p.is_dir() and p.name != name] if out.is_dir() else []
    if others:
        raise DatasetError(f"{out}: dataset id of {name} is already used by {', '.join(others)} "
                           f"(choose another --dataset)")


def _manifest(click_step: int | None, params: dict, pet_norm: str = DEFAULT_PET_NORM,
              organ_groups: str = "quantif", organs_in_label: bool = False) -> dict:
    """The options that change converted outputs (resampling only changes cases that failed without it)."""
    m = {"click_step": click_step, "heatmap_params": {k: params[k] for k in sorted(params)}}
    if pet_norm != DEFAULT_PET_NORM:
        m["pet_norm"] = pet_norm
    if organ_groups != "quantif":
        m["organ_groups"] = organ_groups
    if organs_in_label:
        m["organs_in_label"] = True
    return json.loads(json.dumps(m))  # tuples -> lists, as they come back from the file


def convert_dataset(src: str | os.PathLike, out: str | os.PathLike, dataset_id: int, *,
                    tracers: Sequence[str] = TRACERS, joint: bool = False, click_step: int | None = None,
                    workers: int = 1, overwrite: bool = False, clicks_dir: str | os.PathLike | None = None,
                    tracer_csv: str | os.PathLike | None = None, resample_pet_to_ct: bool = False,
                    ignore_ct_mismatch: bool = False, totalseg_dir: str | os.PathLike | None = None,
                    heatmap_params: dict | None = None,
                    cases: Iterable[str] | None = None, progress: bool = True,
                    pet_norm: str = DEFAULT_PET_NORM, organ_groups: str = "quantif",
                    max_clicks: int | None = DEFAULT_MAX_CLICKS,
                    organs_in_label: bool = False) -> ConversionSummary:
    """Convert an autoPET-style folder into nnU-Net raw datasets (see the module docstring).

    Parameters
    ----------
    src : path-like
        Folder with ``imagesTr/``, ``labelsTr/`` and (optionally) ``clicks/``, ``totalseg/``.
    out : path-like
        The ``nnUNet_raw`` folder that receives the dataset folder(s).
    dataset_id : int
        N: FDG goes to ``Dataset<N>_QuantIFFDG``, PSMA to ``Dataset<N+1>_QuantIFPSMA``; with
        ``joint`` both go to ``Dataset<N>_QuantIF``.
    tracers : sequence of str
        Tracers to convert; cases of other tracers are skipped.
    click_step : int, optional
        Use only the first k tumor and k background clicks (default: all).
    max_clicks : int or None
        A click file with more clicks fails its case (:func:`~nnunet_quantif.clicks.read_clicks`); None: no limit.
    workers : int
        Parallel processes (1 = in this process).
    overwrite : bool
        Reconvert cases whose outputs exist (default: skip them).
    clicks_dir, totalseg_dir : path-like, optional
        Default ``src/clicks`` and ``src/totalseg``.
    tracer_csv : path-like, optional
        ``case,tracer`` rows that override the name prefix.
    resample_pet_to_ct : bool
        Resample a PET on another grid linearly onto the CT grid instead of failing.
    ignore_ct_mismatch : bool
        Resample even when the CT covers too little of the PET; the mismatch is logged and recorded per case.
    heatmap_params : dict, optional
        Passed to the heatmap (sigma_tumor, sigma_background, suv_gate, ...).
    cases : iterable of str, optional
        Convert only these cases (default: all in ``src/imagesTr``).
    progress : bool
        Show a tqdm progress bar.
    pet_norm : {'CT', 'noNorm'}
        nnU-Net normalisation of the PET channel (see the module docstring).
    organ_groups : {'quantif', 'authors'}
        Organ group set of the organ maps (:data:`nnunet_quantif.organs.ORGAN_GROUP_SETS`); recorded in
        ``dataset.json`` under ``quantif.organ_groups`` when not the default.
    organs_in_label : bool
        Write the organ groups into the label file (lesion 1, organs 2, 3, ...: the authors' organ targets,
        :func:`nnunet_quantif.organs.merge_organs_into_label`) instead of only into ``organsTr/``; recorded as
        ``quantif.organs_in_label``. Every case needs its TotalSegmentator outputs. Train such a dataset with a
        lesion-only trainer (``nnUNetTrainerQuantIF_organsInLabel``); inference takes label 1 as the lesion.

    Returns
    -------
    ConversionSummary
        Per-case results; failures are reported there, not raised.
    """
    src, out = Path(src), Path(out)
    tracers = tuple(t.strip().lower() for t in tracers if t.strip())
    bad = [t for t in tracers if t not in TRACERS]
    if bad or not tracers:
        raise ConfigError(f"unknown tracer(s) {bad or tracers} (choose from {', '.join(TRACERS)})")
    if click_step is not None and click_step < 0:
        raise ConfigError(f"--click-step must be >= 0, got {click_step}")
    params = dict(heatmap_params or {})
    from .heatmap_definition import HeatmapDefinition, quantif_dataset_entry

    definition = HeatmapDefinition.from_params({k: v for k, v in params.items() if k != "nonfinite"}, click_step)
    quantif_entry = quantif_dataset_entry(definition, pet_norm)
    # the channel is built with the definition that dataset.json records (every field, truncate included)
    build_params = {**definition.params(), **({"nonfinite": params["nonfinite"]} if "nonfinite" in params else {})}
    from .organs import dataset_group_set

    if organ_groups != "quantif":
        quantif_entry["organ_groups"] = organ_groups
    if organs_in_label:
        quantif_entry["organs_in_label"] = True
        if totalseg_dir is None and not (src / TOTALSEG_DIR).is_dir():
            raise ConfigError("--organs-in-label needs TotalSegmentator outputs: give --totalseg DIR or put them in "
                              f"{src / TOTALSEG_DIR}")
    dataset_group_set({"quantif": quantif_entry})  # an unknown set is a clear error before any work
    tracer_map = read_tracer_csv(tracer_csv, validate=False) if tracer_csv else None
    clicks_dir = Path(clicks_dir) if clicks_dir is not None else src / CLICKS_DIR
    if not clicks_dir.is_dir():
        if clicks_dir != src / CLICKS_DIR:
            raise InputFileError(f"{clicks_dir}: click folder not found")
        clicks_dir = None
    if totalseg_dir is not None and not Path(totalseg_dir).is_dir():
        raise InputFileError(f"{totalseg_dir}: TotalSegmentator folder not found")
    if totalseg_dir is None and (src / TOTALSEG_DIR).is_dir():
        totalseg_dir = src / TOTALSEG_DIR
    all_cases = source_case_names(src) if cases is None else list(cases)

    ds_for: dict[str | None, tuple[str, Path]] = {}
    for t in ((None,) if joint else tracers):
        ident = dataset_id if (joint or t == "fdg") else dataset_id + 1
        name = dataset_name(ident, t)
        folder = out / name
        if src.resolve() == folder.resolve() or folder.resolve() in src.resolve().parents:
            raise OverwriteInputError(f"{folder}: the output dataset would be inside the input folder {src}")
        _check_dataset_folder(out, name)
        ds_for[t] = (name, folder)
        manifest = _manifest(click_step, params, pet_norm, organ_groups, organs_in_label)
        mpath = folder / MANIFEST
        if mpath.is_file() and not overwrite:
            from .config import load_json

            old = load_json(mpath)
            if old != manifest:
                raise ConfigError(f"{mpath}: {name} was converted with other options ({old}); now {manifest}. "
                                  f"Use --overwrite to reconvert every case")

    summary = ConversionSummary()
    jobs = []
    for case in all_cases:
        try:
            tracer = resolve_tracer(case, tracer_map)
        except TracerError as e:
            summary.results.append(ConvertedCase(case, None, "failed", str(e)))
            continue
        if tracer not in tracers:
            summary.results.append(ConvertedCase(case, tracer, "skipped", f"tracer {tracer} not selected"))
            continue
        name, folder = ds_for[None if joint else tracer]
        if not overwrite and case_is_complete(folder, case):
            summary.results.append(ConvertedCase(case, tracer, "skipped", "already converted (use --overwrite)",
                                              dataset=name))
            continue
        jobs.append({"case": case, "tracer": tracer, "src": str(src), "dataset_dir": str(folder), "dataset": name,
                     "clicks_dir": str(clicks_dir) if clicks_dir else None,
                     "totalseg_dir": str(totalseg_dir) if totalseg_dir else None, "click_step": click_step,
                     "resample_pet_to_ct": resample_pet_to_ct, "ignore_ct_mismatch": ignore_ct_mismatch,
                     "heatmap_params": build_params,
                     "organ_groups": organ_groups, "organs_in_label": organs_in_label, "max_clicks": max_clicks})

    used = {j["dataset"] for j in jobs}
    for name, folder in ds_for.values():
        if name in used or folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            write_json(_manifest(click_step, params, pet_norm, organ_groups, organs_in_label), folder / MANIFEST)

    bar = tqdm(total=len(jobs), desc="quantif convert", unit="case", disable=not progress)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                summary.results.append(convert_case(job))
                bar.update()
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(min(workers, len(jobs))) as pool:
                for r in pool.imap_unordered(convert_case, jobs):
                    summary.results.append(r)
                    bar.update()
    finally:
        bar.close()

    for t, (name, folder) in ds_for.items():
        staging = folder / STAGING
        with contextlib.suppress(OSError):
            staging.rmdir()  # only when empty (another run may be using it)
        if folder.is_dir() and _complete_cases(folder):
            summary.num_training[name] = write_dataset_json(folder, t, quantif_entry)
            summary.datasets[name] = folder
    order = {c: i for i, c in enumerate(all_cases)}
    summary.results.sort(key=lambda r: order.get(r.case, len(order)))
    return summary
