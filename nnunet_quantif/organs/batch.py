"""The dataset-level jobs: raw organ maps of a raw dataset, side files of a preprocessed dataset."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DatasetError, InputFileError
from ..layout import (
    CONFIGURATION,
    CT_CHANNEL,
    IMAGES_DIR,
    LABELS_DIR,
    ORGANS_DIR,
    TOTALSEG_DIR,
    channel_file,
    raw_and_preprocessed,
)
from .alignment import align_to_preprocessed
from .groups import DEFAULT_GROUP_SET, dataset_group_set, lesion_label
from .side_files import organ_side_file, save_organ_side_file
from .totalseg import check_totalsegmentator_weights, organ_map_from_files, run_totalsegmentator


@dataclass
class OrganSummary:
    """What :func:`write_organ_side_files` did: per-case outcomes for raw maps and side files."""

    raw_written: list[str] = field(default_factory=list)
    written: list[tuple[str, str]] = field(default_factory=list)  # (configuration, identifier)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (configuration, identifier, reason)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (case, reason)

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        lines = [f"organ maps written: {len(self.raw_written)}; side files written: {len(self.written)}, "
                 f"skipped: {len(self.skipped)}, failed: {len(self.failed)}"]
        for reason, n in sorted(Counter(r for _, _, r in self.skipped).items()):
            lines.append(f"skipped {n}: {reason}")
        lines += [f"FAILED {c}: {r}" for c, r in self.failed]
        return "\n".join(lines)


def write_raw_organ_maps(raw_dataset_dir: str | os.PathLike, cases: list[str], *,
                         totalseg_dir: str | os.PathLike | None = None, run_totalseg: bool = False,
                         totalseg_out: str | os.PathLike | None = None, device: str | None = None,
                         file_ending: str = ".nii.gz", progress: bool = True,
                         group_set: str = DEFAULT_GROUP_SET) -> tuple[list[str], list[tuple]]:
    """Write ``<raw dataset>/organsTr/<case>.nii.gz`` from TotalSegmentator outputs (organ ``group_set``).

    Parameters
    ----------
    raw_dataset_dir : path-like
        The nnU-Net raw dataset (``imagesTr/<case>_0000`` is the CT, ``labelsTr/<case>`` the lesion label).
    cases : list of str
    totalseg_dir : path-like, optional
        Existing outputs ``<case>_total.nii.gz`` / ``<case>_head_glands_cavities.nii.gz``.
    run_totalseg : bool
        Run TotalSegmentator on the CTs first (weights must be installed), writing into
        ``totalseg_out`` (default ``<raw dataset>/totalseg``); existing outputs are reused.

    Returns
    -------
    written : list of str
        Cases whose organ map was written.
    failed : list of (case, reason)
    """
    from tqdm import tqdm

    from ..errors import QuantIFError
    from ..io import read_geometry, write_image

    raw = Path(raw_dataset_dir)
    if run_totalseg:
        check_totalsegmentator_weights()
        totalseg_dir = Path(totalseg_out) if totalseg_out is not None else raw / TOTALSEG_DIR
    if totalseg_dir is None:
        raise ConfigError("give a TotalSegmentator folder or run_totalseg=True")
    written, failed = [], []
    for case in tqdm(cases, desc="organ maps", unit="case", disable=not progress):
        try:
            ct = channel_file(raw / IMAGES_DIR, case, CT_CHANNEL, file_ending)
            label = raw / LABELS_DIR / f"{case}{file_ending}"
            if run_totalseg:
                run_totalsegmentator(ct, totalseg_dir, case, device=device)
            organs, geo = organ_map_from_files(totalseg_dir, case, label if label.is_file() else None,
                                               reference=read_geometry(ct), group_set=group_set)
            write_image(organs, geo, raw / ORGANS_DIR / f"{case}{file_ending}", inputs=[ct, label])
            written.append(case)
        except QuantIFError as e:
            failed.append((case, str(e)))
    return written, failed


def _side_file_job(job: dict) -> tuple[str, str, str | None]:
    """Worker: write one side file. Returns (configuration, identifier, error or None)."""
    import blosc2
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from ..errors import QuantIFError

    conf, ident = job["configuration"], job["identifier"]
    try:
        pm = PlansManager(job["plans_file"])
        cm = pm.get_configuration(conf)
        folder = Path(job["folder"])
        organ_path = Path(job["organ_path"])
        if not organ_path.is_file():
            raise InputFileError(f"{organ_path}: organ map of case '{ident}' not found (give --from-totalseg DIR "
                                 f"or --run-totalsegmentator, or convert with TotalSegmentator outputs)")
        organs, _ = pm.image_reader_writer_class().read_seg(str(organ_path))
        props = load_pickle(str(folder / f"{ident}.pkl"))
        seg = blosc2.open(urlpath=str(folder / f"{ident}_seg.b2nd"), mode="r")[:]
        aligned = align_to_preprocessed(organs, props, pm, cm, seg.shape[1:], source=str(organ_path))
        aligned[seg == 1] = job.get("lesion_label", 0)  # lesion voxels (label 1 in either label layout) are no organ
        save_organ_side_file(aligned, folder, ident, patch_size=tuple(cm.patch_size))
        return conf, ident, None
    except QuantIFError as e:
        return conf, ident, str(e)
    except Exception as e:  # noqa: BLE001 - one bad case must not stop the others
        return conf, ident, f"unexpected {type(e).__name__}: {e}"


def preprocessed_configuration(plans_manager, plans_file: Path, preprocessed_dataset: Path, configuration: str,
                               plans_identifier: str):
    """(configuration manager, preprocessed data folder) of one configuration; clear errors when either is missing."""
    try:
        cm = plans_manager.get_configuration(configuration)
    except (KeyError, ValueError, AssertionError, RuntimeError) as e:
        raise ConfigError(f"{plans_file}: no configuration '{configuration}' ({e})") from None
    folder = preprocessed_dataset / cm.data_identifier
    if not folder.is_dir():
        raise DatasetError(f"{folder}: preprocessed data not found (run nnUNetv2_plan_and_preprocess -d "
                           f"{preprocessed_dataset.name} -c {configuration} -p {plans_identifier})")
    return cm, folder


def write_organ_side_files(dataset: str | int, plans_identifier: str = "nnUNetPlans",
                           configurations: tuple[str, ...] = (CONFIGURATION,), *,
                           raw_dir: str | os.PathLike | None = None,
                           preprocessed_dir: str | os.PathLike | None = None,
                           totalseg_dir: str | os.PathLike | None = None, run_totalseg: bool = False,
                           totalseg_out: str | os.PathLike | None = None, device: str | None = None,
                           overwrite: bool = False, workers: int = 1, progress: bool = True) -> OrganSummary:
    """Write the organ side files of a preprocessed dataset (run after ``nnUNetv2_plan_and_preprocess``).

    1. With ``totalseg_dir`` (or ``run_totalseg``), (re)write the raw organ maps
       ``<nnUNet_raw>/<Dataset>/organsTr/<case>.nii.gz`` (lesion voxels 0); otherwise use the ones
       ``quantif convert`` wrote there.
    2. For every case of ``<nnUNet_preprocessed>/<Dataset>/<plans>_<configuration>``: read the raw map
       with the plans' reader, apply nnU-Net's transpose, crop (the case's ``bbox_used_for_cropping``)
       and the configuration's seg resampling at order 0 (:func:`align_to_preprocessed`), zero the
       lesion voxels of ``_seg.b2nd``, and write ``<identifier>_organs_seg.b2nd``.

    A side file newer than its raw map is kept unless ``overwrite``.

    Parameters
    ----------
    dataset : str or int
        Dataset id or ``Dataset<id>_<name>``.
    plans_identifier : str
        Plans (``-p`` of nnU-Net), e.g. ``nnUNetPlans`` or ``nnUNetResEncUNetLPlans``.
    configurations : tuple of str
        Configurations whose preprocessed folders get side files.
    raw_dir, preprocessed_dir : path-like, optional
        Default ``$nnUNet_raw`` / ``$nnUNet_preprocessed``.
    """
    from multiprocessing import get_context

    from tqdm import tqdm

    raw, pre, plans_file = raw_and_preprocessed(dataset, plans_identifier, raw_dir=raw_dir,
                                                preprocessed_dir=preprocessed_dir)
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from ..config import load_json

    pm = PlansManager(str(plans_file))
    raw_json = load_json(raw / "dataset.json")
    file_ending = raw_json.get("file_ending", ".nii.gz")
    group_set = dataset_group_set(raw_json)
    summary = OrganSummary()
    jobs: list[dict] = []
    per_conf: dict[str, tuple[Path, list[str]]] = {}
    for conf in configurations:
        cm, folder = preprocessed_configuration(pm, plans_file, pre, conf, plans_identifier)
        from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

        per_conf[conf] = (folder, sorted(nnUNetDatasetBlosc2.get_identifiers(str(folder))))
    cases = sorted({c for _, ids in per_conf.values() for c in ids})
    if not cases:
        raise DatasetError(f"{pre}: no preprocessed cases for configuration(s) {', '.join(configurations)}")

    failed_raw: set[str] = set()
    if totalseg_dir is not None or run_totalseg:
        summary.raw_written, failed = write_raw_organ_maps(
            raw, cases, totalseg_dir=totalseg_dir, run_totalseg=run_totalseg, totalseg_out=totalseg_out,
            device=device, file_ending=file_ending, progress=progress, group_set=group_set)
        summary.failed += failed
        failed_raw = {c for c, _ in failed}

    for conf, (folder, ids) in per_conf.items():
        for ident in ids:
            if ident in failed_raw:
                continue
            organ_path = raw / ORGANS_DIR / f"{ident}{file_ending}"
            side = organ_side_file(folder, ident)
            if (not overwrite and side.is_file() and organ_path.is_file()
                    and side.stat().st_mtime >= organ_path.stat().st_mtime):
                summary.skipped.append((conf, ident, "side file up to date (use --overwrite)"))
                continue
            jobs.append({"configuration": conf, "identifier": ident, "plans_file": str(plans_file),
                         "folder": str(folder), "organ_path": str(organ_path),
                         "lesion_label": lesion_label(group_set)})

    bar = tqdm(total=len(jobs), desc="organ side files", unit="case", disable=not progress)
    try:
        if workers <= 1 or len(jobs) <= 1:
            results = map(_side_file_job, jobs)
            for conf, ident, err in results:
                _record(summary, conf, ident, err)
                bar.update()
        else:
            with get_context("spawn").Pool(min(workers, len(jobs))) as pool:
                for conf, ident, err in pool.imap_unordered(_side_file_job, jobs):
                    _record(summary, conf, ident, err)
                    bar.update()
    finally:
        bar.close()
    return summary


def _record(summary: OrganSummary, conf: str, ident: str, err: str | None) -> None:
    if err:
        summary.failed.append((ident, f"[{conf}] {err}"))
    else:
        summary.written.append((conf, ident))
