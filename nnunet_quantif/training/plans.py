"""QuantIF nnU-Net plans: ResEnc-L 192^3 on the MultiTalent architecture, and tiny plans for tests.

A preset (``configs/plans_<preset>.json``) names a plans identifier, the source
plans it builds on, and the patch size, batch size and architecture of one
configuration (``3d_fullres``). :func:`write_plans` copies that configuration
from the source plans that nnU-Net's planner wrote (spacing, normalisation,
resampling and ``data_identifier`` stay as planned, so the new plans **share the
source plans' preprocessed data folder**: no extra preprocessing, and the organ
side files written for that folder serve both), sets the preset's patch,
batch size and architecture, and writes ``<preprocessed>/<Dataset>/<plans_name>.json``.

Presets
-------
``resencl192`` -> ``nnUNetResEncUNetLPlans_MT192``
    Built on ``nnUNetResEncUNetLPlans.json`` (``nnUNetv2_plan_experiment -d N -pl
    nnUNetPlannerResEncL``), falling back to ``nnUNetPlans.json``. 6 stages,
    features [32, 64, 128, 256, 320, 320], blocks [1, 3, 4, 6, 6, 6], 3^3 kernels,
    strides [1, 2, 2, 2, 2, 2], 192^3 patch, batch 2: the MultiTalent ResEnc-L.
``tiny`` -> ``nnUNetPlans_tiny``
    Built on ``nnUNetPlans.json``. 3 stages, features [8, 16, 32], 32^3 patch,
    batch 2, batch Dice: CPU training in seconds per epoch.

A preset may also set ``batch_dice`` (nnU-Net's per-configuration choice of a Dice over the
whole batch instead of one per sample); without it the source plans' value is kept.

Intensity properties
--------------------
``intensity="multitalent"`` (the default of ``resencl192``) writes the CT and PET foreground
intensity properties and ``CTNormalization`` for channels 0 and 1 that the MultiTalent stem was
trained with (``configs/multitalent_intensity.json``, copied from the authors' plans; its
``source`` names the file), the way nnU-Net's ``move_plans_between_datasets`` carries a plans'
properties to another dataset. The data must then be preprocessed with these values, so the
configuration gets its own ``data_identifier`` (``<plans_name>_<configuration>``) unless the
source plans already hold the same properties, and ``nnUNetv2_preprocess -plans_name`` must run.
``intensity="dataset"`` (the default of ``tiny``) keeps the dataset's own fingerprint.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from ..config import load_json, load_json_config
from ..errors import ConfigError, DatasetError
from ..io import write_json
from ..layout import PREPROCESSED_ROOT, find_dataset_folder

__all__ = ["PRESETS", "TINY_PLANS", "MT192_PLANS", "load_preset", "build_plans", "write_plans",
           "write_tiny_plans", "preprocessed_dataset_folder", "plans_summary"]

#: Preset name -> shipped config file.
PRESETS: dict[str, str] = {"resencl192": "plans_resencl_192.json", "tiny": "plans_tiny.json"}
#: Intensity-property sources of :func:`write_plans`, and each preset's default.
INTENSITY_SOURCES = ("dataset", "multitalent")
DEFAULT_INTENSITY = {"resencl192": "multitalent", "tiny": "dataset"}
MULTITALENT_INTENSITY = "multitalent_intensity.json"

TINY_PLANS = "nnUNetPlans_tiny"
MT192_PLANS = "nnUNetResEncUNetLPlans_MT192"


def load_preset(preset: str) -> dict:
    """The preset dict of ``configs/plans_<preset>.json``."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown plans preset '{preset}' (choose from {', '.join(sorted(PRESETS))})")
    return load_json_config(PRESETS[preset])


def preprocessed_dataset_folder(dataset: str | int | os.PathLike) -> Path:
    """``<nnUNet_preprocessed>/DatasetXXX_Name`` for a dataset id/name, or the folder itself if given a path."""
    if not isinstance(dataset, int) and Path(dataset).is_dir():
        return Path(dataset)
    base = os.environ.get(PREPROCESSED_ROOT)
    if not base:
        raise DatasetError(f"dataset '{dataset}': {PREPROCESSED_ROOT} is not set (eval \"$(quantif env)\")")
    return find_dataset_folder(base, dataset, what="preprocessed dataset",
                               hint="run nnUNetv2_plan_and_preprocess")


def multitalent_intensity() -> dict:
    """The shipped MultiTalent intensity properties (``configs/multitalent_intensity.json``)."""
    return load_json_config(MULTITALENT_INTENSITY)


def apply_intensity_properties(plans: dict, configuration: str, intensity: dict) -> bool:
    """Set channels 0 and 1's normalisation and foreground properties from ``intensity`` (in place).

    Returns whether anything changed (then the data must be preprocessed again).
    """
    cfg = plans["configurations"][configuration]
    props = plans.setdefault("foreground_intensity_properties_per_channel", {})
    schemes = list(cfg["normalization_schemes"])
    changed = False
    for ch in ("0", "1"):
        want = intensity["foreground_intensity_properties_per_channel"][ch]
        if props.get(ch) != want:
            props[ch] = dict(want)
            changed = True
        i = int(ch)
        if schemes[i] != intensity["normalization_schemes"][i]:
            schemes[i] = intensity["normalization_schemes"][i]
            changed = True
    cfg["normalization_schemes"] = schemes
    cfg["use_mask_for_norm"] = [False] * len(schemes)
    return changed


def build_plans(source_plans: dict, preset: dict, data_identifier: str | None = None,
                intensity: dict | None = None) -> dict:
    """New plans from nnU-Net planner output and a preset (pure function).

    Parameters
    ----------
    source_plans : dict
        Contents of a planner's plans JSON (needs the preset's configuration).
    preset : dict
        A preset (see :func:`load_preset`).
    data_identifier : str, optional
        Preprocessed-data folder name for the configuration. Default: the source
        configuration's own, so the data is shared.
    intensity : dict, optional
        Intensity properties to write (:func:`multitalent_intensity`); when they differ from the
        source plans' and no ``data_identifier`` is given, the configuration gets its own
        (``<plans_name>_<configuration>``).

    Returns
    -------
    dict
        Plans with ``plans_name`` set and only the preset's configuration.
    """
    cfg_name = preset["configuration"]
    configs = source_plans.get("configurations", {})
    if cfg_name not in configs:
        raise ConfigError(f"plans '{source_plans.get('plans_name')}' have no configuration '{cfg_name}' "
                          f"(found: {', '.join(configs) or 'none'})")
    cfg = copy.deepcopy(configs[cfg_name])
    if "inherits_from" in cfg:
        parent = copy.deepcopy(configs[cfg["inherits_from"]])
        parent.update({k: v for k, v in cfg.items() if k != "inherits_from"})
        cfg = parent
    arch = copy.deepcopy(preset["architecture"])
    n_stages = arch["arch_kwargs"]["n_stages"]
    for key in ("features_per_stage", "kernel_sizes", "strides", "n_blocks_per_stage"):
        if len(arch["arch_kwargs"][key]) != n_stages:
            raise ConfigError(f"preset {preset['plans_name']}: {key} needs {n_stages} entries")
    patch = [int(v) for v in preset["patch_size"]]
    if len(patch) != len(cfg["patch_size"]):
        raise ConfigError(f"preset {preset['plans_name']}: patch {patch} does not match the "
                          f"{len(cfg['patch_size'])}-D configuration '{cfg_name}'")
    divisor = [1] * len(patch)
    for stride in arch["arch_kwargs"]["strides"]:
        divisor = [d * s for d, s in zip(divisor, stride)]
    if any(p % d for p, d in zip(patch, divisor)):
        raise ConfigError(f"preset {preset['plans_name']}: patch {patch} is not divisible by the total "
                          f"stride {divisor}")
    cfg["patch_size"] = patch
    cfg["batch_size"] = int(preset["batch_size"])
    if "batch_dice" in preset:
        cfg["batch_dice"] = bool(preset["batch_dice"])
    cfg["architecture"] = arch
    if data_identifier is not None:
        cfg["data_identifier"] = data_identifier
    plans = copy.deepcopy(source_plans)
    plans["plans_name"] = preset["plans_name"]
    plans["configurations"] = {cfg_name: cfg}
    if intensity is not None:
        changed = apply_intensity_properties(plans, cfg_name, intensity)
        plans["quantif_intensity_source"] = intensity.get("source", "given")
        if changed and data_identifier is None:
            cfg["data_identifier"] = f"{preset['plans_name']}_{cfg_name}"
    return plans


def write_plans(dataset: str | int | os.PathLike, preset: str, source_plans: str | None = None,
                data_identifier: str | None = None, intensity: str | None = None) -> Path:
    """Write the plans of a preset for a preprocessed dataset.

    Parameters
    ----------
    dataset : int, str or path-like
        Dataset id/name under ``nnUNet_preprocessed``, or the preprocessed dataset folder
        (``<nnUNet_preprocessed>/DatasetXXX_Name``).
    preset : {'resencl192', 'tiny'}
        Which plans to write (see the module docstring).
    source_plans : str, optional
        Plans identifier to build on (default: the first of the preset's
        ``source_plans`` that exists in the folder).
    data_identifier : str, optional
        Give the configuration its own preprocessed-data folder (then run
        ``nnUNetv2_preprocess -d N -plans_name <plans_name> -c 3d_fullres``).
        Default: share the source plans' data.
    intensity : {'dataset', 'multitalent'}, optional
        Where the CT/PET intensity properties come from (default: the preset's,
        :data:`DEFAULT_INTENSITY`; see the module docstring).

    Returns
    -------
    Path
        The written ``<plans_name>.json``.
    """
    folder = preprocessed_dataset_folder(dataset)
    spec = load_preset(preset)
    candidates = [source_plans] if source_plans else list(spec["source_plans"])
    src = next((folder / f"{c}.json" for c in candidates if (folder / f"{c}.json").is_file()), None)
    if src is None:
        raise DatasetError(f"{folder}: none of the source plans {', '.join(c + '.json' for c in candidates)} "
                           f"found (run nnUNetv2_plan_experiment / nnUNetv2_plan_and_preprocess first)")
    intensity = intensity or DEFAULT_INTENSITY.get(preset, "dataset")
    if intensity not in INTENSITY_SOURCES:
        raise ConfigError(f"unknown intensity-property source '{intensity}' (choose from "
                          f"{', '.join(INTENSITY_SOURCES)})")
    plans = build_plans(load_json(src), spec, data_identifier,
                        multitalent_intensity() if intensity == "multitalent" else None)
    out = folder / f"{spec['plans_name']}.json"
    write_json(plans, out)
    return out


def write_tiny_plans(preprocessed_dataset_folder: str | os.PathLike, source_plans: str | None = None) -> Path:
    """Write ``nnUNetPlans_tiny.json`` into a preprocessed dataset folder (see :func:`write_plans`)."""
    return write_plans(preprocessed_dataset_folder, "tiny", source_plans)


def plans_summary(plans_file: str | os.PathLike) -> str:
    """One line describing a plans file's first configuration (for the CLI)."""
    plans = json.loads(Path(plans_file).read_text())
    name, cfg = next(iter(plans["configurations"].items()))
    kw = cfg["architecture"]["arch_kwargs"]
    return (f"{plans['plans_name']} [{name}]: patch {cfg['patch_size']}, batch {cfg['batch_size']}, "
            f"spacing {cfg['spacing']}, features {kw['features_per_stage']}, data '{cfg['data_identifier']}'")
