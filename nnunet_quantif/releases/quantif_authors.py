"""Import the QuantIF authors' release (github.com/Zhack47/autopetiv) into model folders this project runs.

Source layout (their ``process.py`` and Dockerfile)::

    SRC/nnUNet_results/Dataset515_AUTOPETIVFDG/nnUNetTrainer_organs_FDG__nnUNetResEncUNetLPlans__3d_fullres/
        plans.json, dataset.json, fold_0..4/checkpoint_final.pth (or checkpoint_latest.pth)
    SRC/nnUNet_results/Dataset516_AUTOPETIVPSMA/nnUNetTrainer_organs_PSMA__nnUNetResEncUNetLPlans__3d_fullres/
    SRC/dd_weights/weights/      one tracer-classifier state dict per file

Output layout::

    DST/fdg/, DST/psma/   nnU-Net model folders (plans.json, dataset.json, fold_k/checkpoint_final.pth)
    DST/tracer/           tracer classifier folder (``--tracer-weights``), architecture ``authors``
    DST/provenance.json

Their network (``ResidualEncoderUNetOrgan``) is a residual-encoder U-Net whose decoder also holds
``organ_seg_layers`` (15 organ outputs per decoder stage). Its lesion path has the keys and shapes of
dynamic-network-architectures' ``ResidualEncoderUNet``, and our dual-head network
(:class:`~nnunet_quantif.network.DualHeadUNet`) holds the same organ layers under ``organ_head.seg_layers``.
The import renames ``decoder.organ_seg_layers.*`` to ``organ_head.seg_layers.*`` and records our trainers
``nnUNetTrainerQuantIF_FDG_authors`` / ``nnUNetTrainerQuantIF_PSMA_authors`` in the checkpoints. Rewriting
the trainer name (rather than adding aliases of their trainer names to the ``nnunet_ext`` shim) keeps the
shim a plain re-export of our trainers and makes the imported folder an ordinary QuantIF model folder: every
command that takes one, ``nnUNetv2_predict`` included, rebuilds the same network, and the organ weights stay
available. Nothing else of the weights changes; in eval mode both networks return the lesion logits only.
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
    staged_output,
    write_json_file,
    write_release_model_set,
)

log = logging.getLogger(__name__)

__all__ = ["RELEASE", "MODELS", "TRACER_WEIGHTS", "authors_contract", "import_quantif_authors"]

#: Registry name of this release.
RELEASE = "quantif-authors"
#: tracer -> (dataset folder, model folder, our trainer).
MODELS: dict[str, tuple[str, str, str]] = {
    "fdg": ("Dataset515_AUTOPETIVFDG",
            model_folder_name("nnUNetTrainer_organs_FDG", "nnUNetResEncUNetLPlans", CONFIGURATION),
            "nnUNetTrainerQuantIF_FDG_authors"),
    "psma": ("Dataset516_AUTOPETIVPSMA",
             model_folder_name("nnUNetTrainer_organs_PSMA", "nnUNetResEncUNetLPlans", CONFIGURATION),
             "nnUNetTrainerQuantIF_PSMA_authors"),
}
#: The tracer-classifier weights folder, relative to SRC.
TRACER_WEIGHTS = Path("dd_weights") / "weights"
#: The folds of the release.
RELEASE_FOLDS: tuple[int, ...] = (0, 1, 2, 3, 4)
#: The download link as the repository's README.md gives it ("Weights available at: ...", a Google Drive folder).
RELEASE_LINK = "https://drive.google.com/drive/folders/1y_mskO57Jro7XUTmjkjby05aCL0oip8n?usp=sharing"
REPOSITORY = "https://github.com/Zhack47/autopetiv (submission_task1/nnunet-baseline)"
LICENCE = "not stated in the repository (the vendored nnU-Net is Apache-2.0)"
#: The authors' test-time settings: tile step 0.6, mirroring by the raw PET voxel count (``authors`` policy).
INFERENCE_DEFAULTS: dict = {"tile_step_size": 0.6, "mirroring": "authors"}
#: The organ head: background + 14 organ groups.
NUM_ORGANS = 15
_RENAMES = (("decoder.organ_seg_layers.", "organ_head.seg_layers."),)


def authors_contract(pet_normalization: str) -> dict:
    """The ``quantif`` entry of an imported authors' model: CT, PET and their signed heatmap (SUV gate 4,
    their background map, σ 3 / 6 voxels), their PET normalisation and test-time defaults."""
    params = {"sigma_tumor": [3.0, 3.0, 3.0], "sigma_background": [6.0, 6.0, 6.0], "suv_gate": 4.0,
              "background_mode": "authors", "truncate": 4.0, "click_policy": "all", "click_step": None}
    heatmap = {"mode": "pet_gated_gaussian", **params}
    inputs = [{"source": "ct"}, {"source": "pet"},
              {"source": "clicks", "encoding": "pet_gated_gaussian", "params": params}]
    return contract_entry(inputs, pet_normalization, INFERENCE_DEFAULTS, heatmap=heatmap)


def _source_model(src: Path, tracer: str) -> Path:
    ds, model, _ = MODELS[tracer]
    for root in (src / RESULTS_ROOT, src):
        if (root / ds / model).is_dir():
            return root / ds / model
    raise ModelError(f"{src}: no {tracer.upper()} model ({RESULTS_ROOT}/{ds}/{model}/ not found)")


def _import_model(model_dir: Path, tracer: str, out: Path) -> dict:
    """Write one nnU-Net model folder from the release's ``model_dir``; returns its provenance entry."""
    from ..network import build_dual_head_network

    def network(cm, n_out: int, dataset: dict):
        return build_dual_head_network(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                       cm.network_arch_init_kwargs_req_import, 3, n_out, NUM_ORGANS,
                                       deep_supervision=False)

    entry = import_model_folder(
        model_dir, out, release=RELEASE, trainer=MODELS[tracer][2], expected_folds=RELEASE_FOLDS, n_preprocessed=3,
        channels_reason="the authors' input contract has 3 (CT, PET, click heatmap)",
        make_dataset=lambda dataset, pet_normalization, found: {**dataset,
                                                                "quantif": authors_contract(pet_normalization)},
        make_network=network, renames=_RENAMES)
    return {"tracer": tracer, **entry, "network": entry["network"] + " + organ head"}


def _import_tracer(weights_dir: Path, out: Path) -> dict:
    """Write the ``authors`` tracer folder from their weight files (sorted by name, fold k = k-th file)."""
    from .. import __version__
    from ..tracer.model import ARCHITECTURES, AuthorsMIPCNN
    from ..tracer.preprocessing import INPUT_SPECS
    from ..tracer.training import DECISIONS, META_NAME, META_SCHEMA, TRACERS, fold_file_name

    if not weights_dir.is_dir():
        raise ModelError(f"{weights_dir}: tracer-classifier weights folder not found")
    files = sorted(p for p in weights_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ModelError(f"{weights_dir}: no tracer-classifier weight files")
    target = AuthorsMIPCNN().state_dict()
    out.mkdir()
    fold_files = []
    for k, path in enumerate(files):
        mapped = map_state_dict(read_state_dict(path, key=None), target, source_name=str(path))
        name = fold_file_name(k)
        torch.save({"state_dict": mapped, "fold": k, "arch": "authors", "source": path.name}, out / name)
        fold_files.append(name)
    meta = {"schema": META_SCHEMA, "kind": "the QuantIF authors' tracer discriminator (DeepDiscriminator), imported",
            "arch": "authors", "nnunet_quantif_version": __version__, "torch_version": torch.__version__,
            "classes": list(TRACERS), "output": "P(PSMA) = sigmoid(logit)", "decision": DECISIONS["authors"],
            "input": INPUT_SPECS["authors"], "architecture": ARCHITECTURES["authors"],
            "folds": len(files), "fold_files": fold_files, "source_files": [p.name for p in files]}
    write_json_file(meta, out / META_NAME)
    return {"source": str(weights_dir), "arch": "authors", "folds": len(files),
            "files": {f: p.name for f, p in zip(fold_files, files)}}


def import_quantif_authors(src: str | os.PathLike, dst: str | os.PathLike, *, force: bool = False) -> dict:
    """Import the authors' unpacked release ``src`` into ``dst`` (layout in the module docstring).

    Parameters
    ----------
    src : path-like
        The unpacked release (holding ``nnUNet_results/`` and ``dd_weights/weights/``).
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
        A missing model or fold checkpoint, an unsafe, truncated or mismatched checkpoint, or plans whose
        channel count disagrees with the contract. Nothing is written.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise ModelError(f"{src}: release folder not found")
    sources = {tracer: _source_model(src, tracer) for tracer in MODELS}
    weights_dir = src / TRACER_WEIGHTS
    if not weights_dir.is_dir():
        raise ModelError(f"{src}: no tracer-classifier weights ({TRACER_WEIGHTS}/ not found)")
    with staged_output(dst, force=force, inputs=[src]) as tmp:
        models = {tracer: _import_model(model_dir, tracer, tmp / tracer) for tracer, model_dir in sources.items()}
        tracer = _import_tracer(weights_dir, tmp / "tracer")
        digests: dict[str, str] = {}
        for folder in [*sources.values(), weights_dir]:
            digests.update(folder_digests(folder, relative_to=src))
        provenance = {"release": RELEASE, "repository": REPOSITORY, "release_link": RELEASE_LINK,
                      "licence": LICENCE, "source": str(src.resolve()), "import_date": import_date(),
                      "models": {**models, "tracer": tracer}, "source_sha256": digests}
        write_json_file(provenance, tmp / PROVENANCE_NAME)
        write_release_model_set(tmp, RELEASE, router="authors", router_weights="tracer",
                                models={t: t for t in models})
    return provenance
