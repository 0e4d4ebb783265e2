"""Organ groups, the mapping from TotalSegmentator classes, and the organ-label side files.

One module per job: :mod:`.groups` (the group sets and the TotalSegmentator mapping),
:mod:`.totalseg` (TotalSegmentator's files, weights and runner), :mod:`.side_files` (the side
files), :mod:`.alignment` (nnU-Net's preprocessing geometry, replayed) and :mod:`.batch` (the
dataset-level jobs of ``quantif organs``). Everything public is importable from this package.

The auxiliary organ head of the QuantIF trainers learns 14 organ groups
(:data:`ORGAN_GROUPS`, label ``i + 1`` for group ``i``, 0 = background). The
groups are defined in ``configs/organs.json`` by TotalSegmentator class *names*
per task (``total`` and ``head_glands_cavities``); the class ids are looked up
in the installed ``totalsegmentator.map_to_binary.class_map`` at run time.

Side files
----------
Organs must not become extra classes of the lesion label (that would dilute
nnU-Net's lesion foreground oversampling), so they travel as a **side file**
next to nnU-Net's preprocessed data::

    <nnUNet_preprocessed>/<Dataset>/<plans>_<configuration>/<identifier>_organs_seg.b2nd

an uint8 array of shape (1, z, y, x) (z, y, x after nnU-Net's
``transpose_forward``) with exactly the shape of ``<identifier>_seg.b2nd``.
Its name ends in ``_seg.b2nd``, so ``nnUNetDatasetBlosc2.get_identifiers``
ignores it. It is written with nnU-Net's own blosc2 chunking
(:func:`nnunetv2.training.dataloading.nnunet_dataset.comp_blosc2_params`) and
read back memory-mapped, like nnU-Net reads the segmentation.

Pipeline
--------
1. Organ maps on the image grid: :func:`organ_map_from_totalseg` on TotalSegmentator's
   ``<case>_total.nii.gz`` and ``<case>_head_glands_cavities.nii.gz`` (existing outputs, or
   :func:`run_totalsegmentator` when its weights are installed; nothing is ever downloaded).
   ``quantif convert`` writes them to ``<nnUNet_raw>/<Dataset>/organsTr/<case>.nii.gz`` when the
   TotalSegmentator files lie in ``<src>/totalseg``; ``quantif organs --dataset N --from-totalseg DIR``
   (or ``--run-totalsegmentator``) writes them there too. nnU-Net ignores that folder.
2. After ``nnUNetv2_plan_and_preprocess``, ``quantif organs --dataset N [-p PLANS] [-c CONF ...]``
   (:func:`write_organ_side_files`) reads each raw map with the plans' reader and applies exactly the
   preprocessing geometry of its case (:func:`align_to_preprocessed`): ``transpose_forward``, the crop
   stored in the case's ``.pkl`` (``bbox_used_for_cropping``) and the configuration's
   ``resampling_fn_seg`` with the interpolation order forced to 0 (nearest neighbour), to the shape of
   the case's ``_seg.b2nd``. Lesion voxels (of the raw label and of the preprocessed seg) are 0.

Group sets
----------
``quantif`` (``configs/organs.json``, the default) and ``authors`` (``configs/organs_authors.json``:
the authors' 13 groups, with a group ``lesion`` at label 1 that receives the lesion voxels, as their
organ head learned the whole label map). A dataset's set is recorded in ``dataset.json`` under
``quantif.organ_groups`` by ``quantif convert`` and read back by :func:`write_organ_side_files`.
Both sets have 14 labelled groups, so the organ head has 15 outputs either way.
"""

from __future__ import annotations

from .alignment import LABEL_RESAMPLING_ORDER, align_to_preprocessed
from .batch import (
    OrganSummary,
    preprocessed_configuration,
    write_organ_side_files,
    write_raw_organ_maps,
)
from .groups import (
    DEFAULT_GROUP_SET,
    LESION_GROUP,
    NUM_ORGAN_LABELS,
    ORGAN_GROUP_SETS,
    ORGAN_GROUPS,
    ORGANS_CONFIG,
    TOTALSEG_TASKS,
    _load_groups,
    dataset_group_set,
    group_names,
    lesion_label,
    merge_organs_into_label,
    merged_label_names,
    organ_label,
    organ_map_from_totalseg,
    resolve_group_ids,
)
from .side_files import SIDE_FILE_SUFFIX, load_organ_side_file, organ_side_file, save_organ_side_file
from .totalseg import (
    check_totalsegmentator_weights,
    organ_map_from_files,
    run_totalsegmentator,
    totalseg_paths,
    totalsegmentator_weight_folders,
)

__all__ = ["LABEL_RESAMPLING_ORDER", "align_to_preprocessed", "OrganSummary", "preprocessed_configuration",
           "write_organ_side_files", "write_raw_organ_maps", "DEFAULT_GROUP_SET", "LESION_GROUP", "NUM_ORGAN_LABELS",
           "ORGAN_GROUP_SETS", "ORGAN_GROUPS", "ORGANS_CONFIG", "TOTALSEG_TASKS", "dataset_group_set", "group_names",
           "lesion_label", "merge_organs_into_label", "merged_label_names", "organ_label", "organ_map_from_totalseg",
           "resolve_group_ids", "SIDE_FILE_SUFFIX", "load_organ_side_file", "organ_side_file",
           "save_organ_side_file", "check_totalsegmentator_weights", "organ_map_from_files", "run_totalsegmentator",
           "totalseg_paths", "totalsegmentator_weight_folders", "_load_groups"]
