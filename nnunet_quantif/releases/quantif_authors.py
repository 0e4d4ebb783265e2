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
import shutil
from pathlib import Path

import torch

from ..errors import ModelError
from ..layout import CONFIGURATION, RESULTS_ROOT, model_folder_name
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
    read_state_dict,
    source_configuration,
    staged_output,
    state_dict_of,
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
#: Their network class, which the plans may name; our trainer builds it from DNA's ResidualEncoderUNet.
_THEIR_CLASS_SUFFIX = "ResidualEncoderUNetOrgan"
_DNA_RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
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
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from ..network import build_dual_head_network

    trainer = MODELS[tracer][2]
    plans_path, ds_path = model_dir / "plans.json", model_dir / "dataset.json"
    plans, dataset = read_json_file(plans_path), read_json_file(ds_path)
    found, missing = find_folds(model_dir, RELEASE_FOLDS)
    if missing:
        log.warning("%s: folds %s missing; importing folds %s", model_dir, ", ".join(map(str, missing)),
                    ", ".join(map(str, found)))
    first = read_checkpoint(found[min(found)])
    source_trainer = first.get("trainer_name")
    configuration, pet_normalization = source_configuration(
        plans, dataset, first, plans_path, found[min(found)], 3,
        "the authors' input contract has 3 (CT, PET, click heatmap)")
    arch = plans["configurations"][configuration].get("architecture", {})
    if str(arch.get("network_class_name", "")).endswith(_THEIR_CLASS_SUFFIX):
        arch["network_class_name"] = _DNA_RESENC
    dataset = dict(dataset)
    dataset["quantif"] = authors_contract(pet_normalization)

    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    n_out = pm.get_label_manager(dataset).num_segmentation_heads
    net = build_dual_head_network(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                  cm.network_arch_init_kwargs_req_import, 3, n_out, NUM_ORGANS,
                                  deep_supervision=False)
    target = net.state_dict()
    out.mkdir()
    write_json_file(plans, out / "plans.json")
    write_json_file(dataset, out / "dataset.json")
    if (model_dir / "dataset_fingerprint.json").is_file():
        shutil.copyfile(model_dir / "dataset_fingerprint.json", out / "dataset_fingerprint.json")
    params = 0
    for k, path in found.items():
        ck, first = (first, None) if first is not None else (read_checkpoint(path), None)
        mapped = map_state_dict(state_dict_of(ck, path), target, renames=_RENAMES, source_name=str(path))
        params = network_parameter_count(mapped)
        fold_out = out / f"fold_{k}"
        fold_out.mkdir()
        torch.save(clean_checkpoint(
            mapped, trainer_name=trainer, configuration=configuration, fold=k,
            mirror_axes=normalize_mirror_axes(ck.get("inference_allowed_mirroring_axes", (0, 1, 2))),
            imported={"release": RELEASE, "source": str(path), "source_trainer_name": ck.get("trainer_name")}),
            fold_out / "checkpoint_final.pth")
        del ck, mapped
    return {"tracer": tracer, "source": str(model_dir), "trainer_name": trainer,
            "source_trainer_name": source_trainer, "configuration": configuration,
            "folds": sorted(found), "missing_folds": missing,
            "checkpoints": {str(k): p.name for k, p in found.items()},
            "network": cm.network_arch_class_name.rsplit(".", 1)[-1] + " + organ head",
            "parameters": params, "pet_normalization": pet_normalization}


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
