"""Import BIRTH, the winning autoPET IV release (github.com/huang-jw22/autoPET-4-submission).

Source layout (their Dockerfile copies ``nnUNet_results`` and ``tracer_classifier.pt``; ``process.py`` names the
models)::

    SRC/nnUNet_results/Dataset723_OrganSupervisedAutoPETIII/autoPET3_Trainer__ResEncL_Plan__3d_fullres_patch192_bs2/
        plans.json, dataset.json, fold_0 .. fold_2/checkpoint_final.pth
    SRC/nnUNet_results/Dataset826_AutoPET_All_MultiClicks_Organs/autoPET3_Trainer__ResEncL_Plan__3d_fullres_patch192_bs2/
        fold_0, fold_1
    SRC/nnUNet_results/Dataset820_AutoPET_PSMA_MultiClicks/nnUNetTrainer_finetune__ResEncL_Plan__3d_fullres_patch192_bs3/
        fold_0 .. fold_4
    SRC/tracer_classifier.pt     the state dict of their tracer classifier (hakal104/autoPETIII)

``SRC`` may also be the ``nnUNet_results`` folder itself (the classifier then beside it or inside it).

Their FDG networks (``autoPET3_Trainer``) are ``ResidualEncoderUNetOrgan``: dynamic-network-architectures'
``ResidualEncoderUNet`` whose decoder also holds ``organ_seg_layers`` (11 organ outputs), unused in eval mode; the
import drops those keys. Their PSMA network (``nnUNetTrainer_finetune``, which changes only the loss) is the plans'
stock network. Every model is written as a stock nnU-Net model folder (trainer ``nnUNetTrainer``) with four inputs:
CT, PET and the tumor and background ``gaussian`` click channels (σ = 3 voxels, scipy's truncate 4 and reflect
mode, raw sums of binary impulses on the native PET grid, clicks outside the image dropped), normalised by
nnU-Net as their plans say.

Output layout::

    DST/fdg_723/, DST/fdg_826/, DST/psma/   nnU-Net model folders
    DST/tracer/                            their classifier as a tracer folder of architecture ``birth``
    DST/models.json                        the model set: router ``birth``; FDG with >= 5 background clicks ->
                                           fdg_723, else fdg_826; PSMA -> psma; SUV floor 1.5 (FDG) / 1.0 (PSMA)
    DST/provenance.json

Their test-time mirroring depends on the wall time of each tile's forward pass, so it cannot be reproduced; each
model records ``mirroring: all`` (every flip of the checkpoint's axes, averaged), and ``--mirroring birth-fixed K``
runs their first K flips, averaged as they average them (docs/MODELS.md).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..errors import ModelError
from ..layout import CONFIGURATION, RESULTS_ROOT, model_folder_name
from .common import (
    PROVENANCE_NAME,
    contract_entry,
    folder_digests,
    import_date,
    import_model_folder,
    map_state_dict,
    read_state_dict,
    sha256_file,
    staged_output,
    write_json_file,
    write_release_model_set,
)

log = logging.getLogger(__name__)

__all__ = ["RELEASE", "MODELS", "CLICK_RULE", "POSTPROCESS", "birth_contract", "import_birth"]

RELEASE = "birth"
REPOSITORY = "https://github.com/huang-jw22/autoPET-4-submission"
#: The download link as their README.md gives it ("All model weights are available under ...").
RELEASE_LINK = "https://drive.google.com/drive/folders/1kdblExa1I6QFtoZHxEVwVRittJb1hdpp?usp=drive_link"
LICENCE = "MIT (the repository's LICENSE; the tracer classifier from hakal104/autoPETIII, MIT)"
TRAINER = "nnUNetTrainer"
#: Output folder -> (tracer, dataset folder, model folder, the folds their process.py runs).
MODELS: dict[str, tuple[str, str, str, tuple[int, ...]]] = {
    "fdg_723": ("fdg", "Dataset723_OrganSupervisedAutoPETIII",
                model_folder_name("autoPET3_Trainer", "ResEncL_Plan", f"{CONFIGURATION}_patch192_bs2"), (0, 1, 2)),
    "fdg_826": ("fdg", "Dataset826_AutoPET_All_MultiClicks_Organs",
                model_folder_name("autoPET3_Trainer", "ResEncL_Plan", f"{CONFIGURATION}_patch192_bs2"), (0, 1)),
    "psma": ("psma", "Dataset820_AutoPET_PSMA_MultiClicks",
             model_folder_name("nnUNetTrainer_finetune", "ResEncL_Plan", f"{CONFIGURATION}_patch192_bs3"),
             (0, 1, 2, 3, 4)),
}
#: The tracer classifier's file.
CLASSIFIER_FILE = "tracer_classifier.pt"
#: Their model choice (process.py): an FDG case with 5 or more background clicks goes to Dataset723, every other
#: FDG case to Dataset826 (their README's "0-5 / 6-10" clicks disagrees; the code is followed).
CLICK_RULE: dict = {"tracer": "fdg", "background_clicks": {"min": 5}, "model": "fdg_723"}
#: Their post-processing: voxels with SUV below 1.5 (FDG) or 1.0 (PSMA) are zeroed.
POSTPROCESS: dict = {"fdg": {"kind": "suv_floor", "suv": 1.5}, "psma": {"kind": "suv_floor", "suv": 1.0}}
#: Their test-time settings as far as they are deterministic: tile step 0.5, every flip of the checkpoint's axes,
#: no post-processing of the model's own (the set's SUV floor applies).
INFERENCE_DEFAULTS: dict = {"tile_step_size": 0.5, "mirroring": "all", "postprocess": False}
#: Their click channels: σ = 3 voxels, scipy's truncate 4, raw sums.
_GAUSSIAN = {"sigma": [3.0, 3.0, 3.0], "truncate": 4.0, "normalization": "none"}
#: The organ head of their FDG networks, which inference does not use.
_ORGAN_PREFIX = "decoder.organ_seg_layers."


def birth_contract(pet_normalization: str, folds) -> dict:
    """The ``quantif`` entry of an imported BIRTH model: CT, PET, tumor and background ``gaussian`` channels,
    their deterministic test-time settings with ``folds``."""
    inputs = [{"source": "ct"}, {"source": "pet"},
              {"source": "clicks", "encoding": "gaussian", "params": {"label": "tumor", **_GAUSSIAN}},
              {"source": "clicks", "encoding": "gaussian", "params": {"label": "background", **_GAUSSIAN}}]
    return contract_entry(inputs, pet_normalization, {**INFERENCE_DEFAULTS, "folds": sorted(folds)})


def _results_root(src: Path) -> Path:
    """The folder holding the ``Dataset...`` folders: ``src/nnUNet_results`` or ``src``."""
    for root in (src / RESULTS_ROOT, src):
        if any((root / ds).is_dir() for _, ds, _, _ in MODELS.values()):
            return root
    names = ", ".join(ds for _, ds, _, _ in MODELS.values())
    raise ModelError(f"{src}: no BIRTH models ({RESULTS_ROOT}/ with {names} not found)")


def _source_model(root: Path, key: str) -> Path:
    _, ds, model, _ = MODELS[key]
    d = root / ds / model
    if not d.is_dir():
        raise ModelError(f"{root}: no {key} model ({ds}/{model}/ not found)")
    return d


def _classifier_file(src: Path, root: Path) -> Path:
    for cand in (src / CLASSIFIER_FILE, root / CLASSIFIER_FILE, src.parent / CLASSIFIER_FILE):
        if cand.is_file():
            return cand
    raise ModelError(f"{src}: no tracer classifier ({CLASSIFIER_FILE} not found)")


def _import_model(model_dir: Path, key: str, out: Path) -> dict:
    """Write one nnU-Net model folder from their ``model_dir``; returns its provenance entry. Only the folds their
    ``process.py`` runs are imported."""
    tracer, _, _, expected = MODELS[key]
    entry = import_model_folder(
        model_dir, out, release=RELEASE, trainer=TRAINER, expected_folds=expected, n_preprocessed=4,
        channels_reason="BIRTH's input contract has 4 (CT, PET, tumor and background click Gaussians)",
        make_dataset=lambda dataset, pet_normalization, found: {
            **dataset, "quantif": birth_contract(pet_normalization, found)},
        select_weights=lambda weights: {k: v for k, v in weights.items() if not k.startswith(_ORGAN_PREFIX)},
        only_expected=True)
    entry["organ_tensors_dropped"] = entry.pop("tensors_dropped")
    return {"tracer": tracer, **entry}


def _import_classifier(path: Path, out: Path) -> dict:
    """Write their classifier as a ``birth`` tracer folder (one fold)."""
    from .. import __version__
    from ..tracer.model import ARCHITECTURES, BirthMIPClassifier
    from ..tracer.preprocessing import INPUT_SPECS
    from ..tracer.training import DECISIONS, META_NAME, META_SCHEMA, TRACERS, fold_file_name

    mapped = map_state_dict(read_state_dict(path, key=None), BirthMIPClassifier().state_dict(),
                            source_name=str(path))
    out.mkdir()
    name = fold_file_name(0)
    torch.save({"state_dict": mapped, "fold": 0, "arch": "birth", "source": path.name}, out / name)
    meta = {"schema": META_SCHEMA, "kind": "BIRTH's tracer classifier (MipClassifier, hakal104/autoPETIII), imported",
            "arch": "birth", "nnunet_quantif_version": __version__, "torch_version": torch.__version__,
            "classes": list(TRACERS), "output": "P(PSMA) = sigmoid(logit)", "decision": DECISIONS["birth"],
            "input": INPUT_SPECS["birth"], "architecture": ARCHITECTURES["birth"],
            "folds": 1, "fold_files": [name], "source_files": [path.name]}
    write_json_file(meta, out / META_NAME)
    return {"source": str(path), "arch": "birth", "folds": 1, "files": {name: path.name}}


def import_birth(src: str | os.PathLike, dst: str | os.PathLike, *, force: bool = False) -> dict:
    """Import BIRTH's unpacked release ``src`` into ``dst`` (layout in the module docstring).

    Parameters
    ----------
    src : path-like
        The folder holding ``nnUNet_results/`` and ``tracer_classifier.pt`` (or ``nnUNet_results`` itself).
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
        A missing model, fold checkpoint or classifier, an unsafe, truncated or mismatched checkpoint, or plans
        that do not describe four input channels. Nothing is written.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise ModelError(f"{src}: release folder not found")
    root = _results_root(src)
    sources = {key: _source_model(root, key) for key in MODELS}
    classifier = _classifier_file(src, root)
    with staged_output(dst, force=force, inputs=[src]) as tmp:
        models = {key: _import_model(model_dir, key, tmp / key) for key, model_dir in sources.items()}
        tracer = _import_classifier(classifier, tmp / "tracer")
        digests: dict[str, str] = {}
        for folder in sources.values():
            digests.update(folder_digests(folder, relative_to=root))
        digests[classifier.name] = sha256_file(classifier)
        provenance = {"release": RELEASE, "repository": REPOSITORY, "release_link": RELEASE_LINK,
                      "licence": LICENCE, "source": str(src.resolve()), "import_date": import_date(),
                      "models": {**models, "tracer": tracer}, "click_rule": dict(CLICK_RULE),
                      "postprocess": dict(POSTPROCESS), "source_sha256": digests}
        write_json_file(provenance, tmp / PROVENANCE_NAME)
        write_release_model_set(tmp, RELEASE, router="birth", router_weights="tracer",
                                models={"fdg": "fdg_826", "psma": "psma"}, click_rules=[CLICK_RULE],
                                postprocess=POSTPROCESS)
    return provenance
