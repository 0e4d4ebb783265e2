"""Import LesionLocator, the DKFZ team's autoPET IV release (github.com/MIC-DKFZ/autoPET-interactive).

Source layout (their ``_model/readme.md``)::

    SRC/_model/   fold_0 .. fold_9/checkpoint_final.pth, plans.json, dataset.json, dataset_fingerprint.json

``SRC`` may be the ``_model`` folder itself or the folder above it.

Their network (``ResidualEncoderUNetOrgan``, 11 organ outputs) is dynamic-network-architectures'
``ResidualEncoderUNet`` (residual encoder, plain decoder) whose decoder also holds ``organ_seg_layers``. In eval
mode it returns the lesion logits of the plain path only, so the import drops the ``decoder.organ_seg_layers.*``
keys and writes a stock nnU-Net model folder (trainer ``nnUNetTrainer``, ``ResidualEncoderUNet``) that every
command of this project loads as it is.

Their plans and ``dataset.json`` describe two preprocessed channels (CT, PET); their trainer builds the network
with two more inputs, the click channels, which their predictor builds after preprocessing. The imported
``dataset.json`` therefore names four channels (so that nnU-Net builds a 4-input network) while ``plans.json``
keeps its two normalisation schemes, and the input contract records the clicks as two ``distance_ball`` channels
of the ``preprocessed`` stage (radius 2, combined by maximum, not normalised) and the float16 cast of CT and PET
(``image_dtype``) that their inference applies before preprocessing.

Output layout::

    DST/model/            the nnU-Net model folder; its dataset.json holds the input contract and their
                          test-time settings (every imported fold averaged, tile step 0.5, mirroring over the
                          checkpoint's axes, no post-processing)
    DST/provenance.json
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

from ..errors import ModelError
from .common import (
    PROVENANCE_NAME,
    clean_checkpoint,
    contract_entry,
    find_folds,
    folder_digests,
    import_date,
    map_state_dict,
    network_parameter_count,
    normalize_mirror_axes,
    read_checkpoint,
    read_json_file,
    source_configuration,
    staged_output,
    state_dict_of,
    write_json_file,
    write_release_model_set,
)

log = logging.getLogger(__name__)

__all__ = ["RELEASE", "MODEL_FOLDER", "RELEASE_FOLDS", "lesionlocator_contract", "import_lesionlocator"]

RELEASE = "lesionlocator"
#: The model folder of the release, as their inference script names it (``RESOURCE_PATH``).
MODEL_FOLDER = "_model"
#: The folds of the release.
RELEASE_FOLDS: tuple[int, ...] = tuple(range(10))
TRAINER = "nnUNetTrainer"
REPOSITORY = "https://github.com/MIC-DKFZ/autoPET-interactive"
#: The download link as their README.md gives it ("downloading our final checkpoint here", a Google Drive file).
RELEASE_LINK = "https://drive.google.com/file/d/1bbzXmwAYslC3COU44uEUaBT0vuOL3NTU/view?usp=sharing"
LICENCE = "Apache-2.0 (the repository's LICENSE)"
#: Their test-time settings: step 0.5, mirroring over the checkpoint's axes, no post-processing (the folds are
#: the imported ones, written by the import).
INFERENCE_DEFAULTS: dict = {"tile_step_size": 0.5, "mirroring": "all", "postprocess": False}
#: Their click stamp: ``PointInteraction_stub(point_radius=2, use_distance_transform=True)``.
_BALL = {"radius": 2, "combine": "max", "normalization": "none"}
#: Names of the click channels added to ``dataset.json``'s ``channel_names``.
CLICK_CHANNEL_NAMES = {"2": "tumor_clicks", "3": "background_clicks"}
_THEIR_CLASS_SUFFIX = "ResidualEncoderUNetOrgan"
_DNA_RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
#: Their organ head, which inference does not use.
_ORGAN_PREFIX = "decoder.organ_seg_layers."


def lesionlocator_contract(pet_normalization: str, folds) -> dict:
    """The ``quantif`` entry of the imported model: CT and PET cast to float16, then the tumor and background
    ``distance_ball`` channels built after preprocessing; their test-time settings with ``folds``."""
    inputs = [{"source": "ct"}, {"source": "pet"},
              {"source": "clicks", "encoding": "distance_ball", "params": {"label": "tumor", **_BALL}},
              {"source": "clicks", "encoding": "distance_ball", "params": {"label": "background", **_BALL}}]
    entry = contract_entry(inputs, pet_normalization, {**INFERENCE_DEFAULTS, "folds": sorted(folds)})
    entry["image_dtype"] = "float16"
    return entry


def find_source_model(src: Path) -> Path:
    """The model folder in ``src``: ``src`` itself or ``src/_model``."""
    for cand in (src, src / MODEL_FOLDER):
        if (cand / "plans.json").is_file():
            return cand
    raise ModelError(f"{src}: no LesionLocator model folder ({MODEL_FOLDER}/ with plans.json not found)")


def import_lesionlocator(src: str | os.PathLike, dst: str | os.PathLike, *, force: bool = False) -> dict:
    """Import LesionLocator from ``src`` into ``dst`` (layout in the module docstring).

    Parameters
    ----------
    src : path-like
        Their ``_model`` folder, or the folder holding it.
    dst : path-like
        Output folder; must not exist or be empty unless ``force``.
    force : bool
        Replace a non-empty ``dst`` (only once the new folder is complete).

    Returns
    -------
    dict
        The provenance record (also written as ``dst/provenance.json``).

    Raises
    ------
    ModelError
        A missing model folder or fold checkpoint, an unsafe, truncated or mismatched checkpoint, or plans
        that do not preprocess two channels. Nothing is written.
    """
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise ModelError(f"{src}: release folder not found")
    model_dir = find_source_model(src)
    plans_path = model_dir / "plans.json"
    plans, dataset = read_json_file(plans_path), read_json_file(model_dir / "dataset.json")
    found, missing = find_folds(model_dir, RELEASE_FOLDS)
    if missing:
        log.warning("%s: folds %s missing; importing folds %s", model_dir, ", ".join(map(str, missing)),
                    ", ".join(map(str, found)))
    with staged_output(dst, force=force, inputs=[src]) as tmp:
        out = tmp / "model"
        out.mkdir()
        params, configuration, source_trainer, target, network, dropped = 0, None, None, None, None, 0
        for k, path in found.items():
            ck = read_checkpoint(path)
            if configuration is None:
                source_trainer = ck.get("trainer_name")
                configuration, pet_normalization = source_configuration(
                    plans, dataset, ck, plans_path, path, 2,
                    "LesionLocator preprocesses 2 (CT, PET; its 2 click channels are built after preprocessing)")
                arch = plans["configurations"][configuration].get("architecture", {})
                if str(arch.get("network_class_name", "")).endswith(_THEIR_CLASS_SUFFIX):
                    arch["network_class_name"] = _DNA_RESENC
                dataset = {**dataset, "channel_names": {**dataset["channel_names"], **CLICK_CHANNEL_NAMES},
                           "quantif": lesionlocator_contract(pet_normalization, found)}
                pm = PlansManager(plans)
                cm = pm.get_configuration(configuration)
                n_out = pm.get_label_manager(dataset).num_segmentation_heads
                net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                             cm.network_arch_init_kwargs_req_import, 4, n_out, allow_init=True,
                                             deep_supervision=False)
                target = net.state_dict()
                network = cm.network_arch_class_name.rsplit(".", 1)[-1]
                del net
            weights = state_dict_of(ck, path)
            lesion = {key: v for key, v in weights.items() if not key.startswith(_ORGAN_PREFIX)}
            dropped = len(weights) - len(lesion)
            mapped = map_state_dict(lesion, target, source_name=str(path))
            params = network_parameter_count(mapped)
            (out / f"fold_{k}").mkdir()
            torch.save(clean_checkpoint(
                mapped, trainer_name=TRAINER, configuration=configuration, fold=k,
                mirror_axes=normalize_mirror_axes(ck.get("inference_allowed_mirroring_axes", (0, 1, 2))),
                imported={"release": RELEASE, "source": str(path), "source_trainer_name": ck.get("trainer_name")}),
                out / f"fold_{k}" / "checkpoint_final.pth")
            del ck, weights, lesion, mapped
        write_json_file(plans, out / "plans.json")
        write_json_file(dataset, out / "dataset.json")
        if (model_dir / "dataset_fingerprint.json").is_file():
            shutil.copyfile(model_dir / "dataset_fingerprint.json", out / "dataset_fingerprint.json")
        provenance = {
            "release": RELEASE, "repository": REPOSITORY, "release_link": RELEASE_LINK, "licence": LICENCE,
            "source": str(src.resolve()), "import_date": import_date(),
            "models": {"model": {"tracer": "any", "source": str(model_dir), "trainer_name": TRAINER,
                                 "source_trainer_name": source_trainer, "configuration": configuration,
                                 "folds": sorted(found), "missing_folds": missing,
                                 "checkpoints": {str(k): p.name for k, p in found.items()},
                                 "network": network, "parameters": params,
                                 "organ_tensors_dropped": dropped,
                                 "pet_normalization": dataset["quantif"]["pet_normalization"]}},
            "source_sha256": folder_digests(model_dir, relative_to=src),
        }
        write_json_file(provenance, tmp / PROVENANCE_NAME)
        write_release_model_set(tmp, RELEASE, router="none", models={"any": "model"})
    return provenance
