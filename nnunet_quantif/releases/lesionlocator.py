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
from pathlib import Path

from ..errors import ModelError
from .common import (
    PROVENANCE_NAME,
    contract_entry,
    folder_digests,
    import_date,
    import_model_folder,
    staged_output,
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
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise ModelError(f"{src}: release folder not found")
    model_dir = find_source_model(src)
    with staged_output(dst, force=force, inputs=[src]) as tmp:
        entry = import_model_folder(
            model_dir, tmp / "model", release=RELEASE, trainer=TRAINER, expected_folds=RELEASE_FOLDS,
            n_preprocessed=2,
            channels_reason="LesionLocator preprocesses 2 (CT, PET; its 2 click channels are built after "
                            "preprocessing)",
            make_dataset=lambda dataset, pet_normalization, found: {
                **dataset, "channel_names": {**dataset["channel_names"], **CLICK_CHANNEL_NAMES},
                "quantif": lesionlocator_contract(pet_normalization, found)},
            select_weights=lambda weights: {k: v for k, v in weights.items() if not k.startswith(_ORGAN_PREFIX)})
        entry["organ_tensors_dropped"] = entry.pop("tensors_dropped")
        provenance = {
            "release": RELEASE, "repository": REPOSITORY, "release_link": RELEASE_LINK, "licence": LICENCE,
            "source": str(src.resolve()), "import_date": import_date(),
            "models": {"model": {"tracer": "any", **entry}},
            "source_sha256": folder_digests(model_dir, relative_to=src),
        }
        write_json_file(provenance, tmp / PROVENANCE_NAME)
        write_release_model_set(tmp, RELEASE, router="none", models={"any": "model"})
    return provenance
