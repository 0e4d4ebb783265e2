"""Import the autoPET IV organisers' nnU-Net baseline (github.com/lab-midas/autoPETCTIV, Task1/nnunet-baseline).

Their ``weights.zip`` (a Git LFS file of the repository) unpacks to
``Dataset221_AutoPETIV_2025/nnUNetTrainer__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth`` beside its
``plans.json`` and ``dataset.json``: a stock nnU-Net ``PlainConvUNet`` with 4 inputs (CT, PET, foreground and
background click Gaussians; CT normalisation, then z-score for the other three). One model serves both tracers.

Output layout::

    DST/model/            the nnU-Net model folder (stock trainer ``nnUNetTrainer``), its dataset.json with
                          the input contract (``gaussian`` click encoding) and the organisers' test-time
                          settings (fold 0, no mirroring, tile step 0.5, no post-processing)
    DST/provenance.json
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import ModelError
from ..layout import CONFIGURATION, RESULTS_ROOT, model_folder_name
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

__all__ = ["RELEASE", "DATASET", "MODEL", "baseline_contract", "import_autopet_baseline"]

RELEASE = "autopet-baseline"
DATASET = "Dataset221_AutoPETIV_2025"
MODEL = model_folder_name("nnUNetTrainer", "nnUNetPlans", CONFIGURATION)
TRAINER = "nnUNetTrainer"
REPOSITORY = "https://github.com/lab-midas/autoPETCTIV (Task1/nnunet-baseline)"
RELEASE_LINK = ("weights.zip in Task1/nnunet-baseline of https://github.com/lab-midas/autoPETCTIV "
                "(a Git LFS file; unpack with unzip_model_weights.sh)")
LICENCE = "Apache-2.0 (the repository's LICENSE)"
#: The organisers' test-time settings (``nnUNetv2_predict -f 0 --disable_tta``, default step 0.5).
INFERENCE_DEFAULTS: dict = {"mirroring": "none", "tile_step_size": 0.5, "postprocess": False, "folds": [0]}
#: Their click channels: σ = 3 voxels, scipy's truncate 4, raw sums.
_GAUSSIAN = {"sigma": [3.0, 3.0, 3.0], "truncate": 4.0, "normalization": "none"}


def baseline_contract(pet_normalization: str = "zscore") -> dict:
    """The ``quantif`` entry of the imported baseline: CT, PET, tumor and background Gaussians."""
    inputs = [{"source": "ct"}, {"source": "pet"},
              {"source": "clicks", "encoding": "gaussian", "params": {"label": "tumor", **_GAUSSIAN}},
              {"source": "clicks", "encoding": "gaussian", "params": {"label": "background", **_GAUSSIAN}}]
    return contract_entry(inputs, pet_normalization, INFERENCE_DEFAULTS)


def find_source_model(src: Path) -> Path:
    """The model folder in ``src``: ``src`` itself, ``src/<MODEL>`` or ``src/<DATASET>/<MODEL>``."""
    for cand in (src, src / MODEL, src / DATASET / MODEL, src / RESULTS_ROOT / DATASET / MODEL):
        if (cand / "plans.json").is_file():
            return cand
    raise ModelError(f"{src}: no baseline model folder ({DATASET}/{MODEL}/ with plans.json not found)")


def import_autopet_baseline(src: str | os.PathLike, dst: str | os.PathLike, *, force: bool = False) -> dict:
    """Import the organisers' baseline from ``src`` into ``dst`` (layout in the module docstring).

    Parameters
    ----------
    src : path-like
        ``.../Dataset221_AutoPETIV_2025/nnUNetTrainer__nnUNetPlans__3d_fullres`` or a folder above it.
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
        As :func:`~nnunet_quantif.releases.quantif_authors.import_quantif_authors`.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise ModelError(f"{src}: release folder not found")
    model_dir = find_source_model(src)
    with staged_output(dst, force=force, inputs=[src]) as tmp:
        entry = import_model_folder(
            model_dir, tmp / "model", release=RELEASE, trainer=TRAINER, expected_folds=(0,), n_preprocessed=4,
            channels_reason="the baseline's input contract has 4 (CT, PET, tumor and background click Gaussians)",
            make_dataset=lambda dataset, pet_normalization, found: {**dataset,
                                                                    "quantif": baseline_contract(pet_normalization)})
        provenance = {
            "release": RELEASE, "repository": REPOSITORY, "release_link": RELEASE_LINK, "licence": LICENCE,
            "source": str(src.resolve()), "import_date": import_date(),
            "models": {"model": {"tracer": "any", **entry}},
            "source_sha256": folder_digests(model_dir, relative_to=src),
        }
        write_json_file(provenance, tmp / PROVENANCE_NAME)
        write_release_model_set(tmp, RELEASE, router="none", models={"any": "model"})
    return provenance
