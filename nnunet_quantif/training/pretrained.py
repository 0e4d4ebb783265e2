"""MultiTalent initialisation: turn a multi-stem MultiTalent checkpoint into an nnU-Net ``-pretrained_weights`` file.

The MultiTalent ResEnc-L checkpoint (Zenodo record 13753413) has one input stem per
pretraining dataset (keys ``encoder.stem.<dataset>.<...>``, also under the decoder's
reference ``decoder.encoder.stem.<dataset>.<...>``) and pretraining segmentation
heads. Stock ``nnUNetv2_train -pretrained_weights`` needs every key of the new
network except the ``.seg_layers.`` ones, with equal shapes
(``nnunetv2/run/load_pretrained_weights.py``). :func:`convert_multitalent`:

* picks one stem (default ``221``, autoPET II, input channels CT, PET) and renames
  its keys to the single stem ``encoder.stem.<...>``;
* maps that stem onto our input channels: the first convolution's weights of the
  source channels are copied to the same channel indices (CT -> 0, PET -> 1), and
  the extra channels (the click heatmap, 2) get **zero** weights, so the
  initialised network computes exactly what MultiTalent computed on CT/PET until
  training lets the heatmap in (``heatmap_init="random"`` draws them instead from
  N(0, (0.01 * std of the copied weights)^2));
* drops the pretraining heads (``.seg_layers.``) and the other stems;
* copies every other encoder and decoder weight unchanged;
* raises :class:`~nnunet_quantif.errors.ModelError` on any missing key or shape
  mismatch (the plans do not describe the MultiTalent architecture).

The output is ``{"network_weights": state_dict, "quantif_pretrained": info}``.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from ..errors import ModelError
from ..io import atomic_write
from ..layout import CONFIGURATION

__all__ = ["load_checkpoint_object", "load_state_dict_any", "stems_in", "map_multitalent_state_dict",
           "convert_multitalent"]

_STEM_RE = re.compile(r"(^|\.)stem\.([^.]+)\.")
#: Parameters whose shape depends on the number of input channels (dim 1).
_IN_PROJ_RE = re.compile(r"(^|\.)stem\.convs\.0\.(conv|all_modules\.0)\.weight$")


def _checkpoint_safe_globals() -> list:
    """The non-tensor types that real nnU-Net checkpoints hold besides tensors and plain containers:
    NumPy scalars and dtypes in ``logging`` and ``_best_ema`` (allow-listed for ``weights_only`` loading;
    :data:`nnunet_quantif.releases.common.ALLOWED_GLOBALS`)."""
    from ..checkpoints import safe_globals

    return safe_globals()


def load_checkpoint_object(checkpoint: str | os.PathLike, trust_checkpoint: bool = False) -> object:
    """Load a ``.pth`` file safely: ``torch.load(weights_only=True)`` with an allow-list of the types nnU-Net
    checkpoints need, so a crafted pickle cannot run code.

    Parameters
    ----------
    checkpoint : path-like
    trust_checkpoint : bool
        Load with full unpickling (``weights_only=False``), which runs any code the file
        contains. Only for files from a source you trust.

    Raises
    ------
    ModelError
        Missing or unreadable file, or a file that needs types outside the allow-list
        (the message says how to opt in).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    try:
        if trust_checkpoint:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(_checkpoint_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trust_checkpoint and ("weights_only" in str(e) or "GLOBAL" in str(e)):
            what = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
            raise ModelError(f"{path}: refusing to unpickle types outside the safe allow-list ({what}); if the "
                             f"file comes from a source you trust, pass --trust-checkpoint (this runs any code "
                             f"the file contains)") from None
        raise ModelError(f"{path}: cannot read checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelError(f"{path}: cannot read checkpoint ({type(e).__name__}: {first})") from None


def load_state_dict_any(checkpoint: str | os.PathLike, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """The network state dict in a checkpoint file (nnU-Net, Lightning or bare), prefixes stripped.

    Accepts ``{"network_weights": sd}`` (nnU-Net), ``{"state_dict": sd}``, ``{"model": sd}`` or
    a bare state dict; removes ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes.
    Loaded safely (:func:`load_checkpoint_object`) unless ``trust_checkpoint``.
    """
    path = Path(checkpoint)
    obj = load_checkpoint_object(path, trust_checkpoint)
    sd = obj
    if isinstance(obj, dict):
        for key in ("network_weights", "state_dict", "model_state_dict", "model", "net"):
            if isinstance(obj.get(key), dict):
                sd = obj[key]
                break
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{path}: no network state dict found (expected 'network_weights', 'state_dict' or a "
                         f"bare state dict of tensors)")
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k.replace("._orig_mod.", ".")] = v
    return out


def stems_in(state_dict: dict) -> list[str]:
    """Stem names of a multi-stem state dict (``encoder.stem.<name>.…``), sorted."""
    return sorted({m.group(2) for k in state_dict for m in [_STEM_RE.search(k)] if m and m.group(2) != "convs"})


def _resolve_stem(stems: list[str], stem: str, source: str) -> str:
    if stem in stems:
        return stem
    hits = [s for s in stems if re.search(rf"(^|\D){re.escape(stem)}(\D|$)", s)]
    if len(hits) == 1:
        return hits[0]
    what = "is ambiguous" if hits else "not found"
    raise ModelError(f"{source}: stem '{stem}' {what}; stems in the checkpoint: {', '.join(stems) or 'none'}")


def map_multitalent_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], stem: str,
                               heatmap_init: str = "zero", source_name: str = "checkpoint",
                               seed: int = 0, stem_init: str = "copy") -> tuple[dict[str, torch.Tensor], dict]:
    """Map a multi-stem state dict onto a target network's state dict (pure function).

    Parameters
    ----------
    source : dict
        MultiTalent state dict (multi-stem keys).
    target : dict
        State dict of the network to initialise (e.g. the dual-head network of the plans).
    stem : str
        Stem to use (exact name, or a number contained in exactly one stem name).
    heatmap_init : {'zero', 'random'}
        Initialisation of the first-convolution weights of input channels the stem lacks.
    stem_init : {'copy', 'random'}
        ``copy`` (ours): the stem ``stem`` is copied. ``random`` (the authors' models): the stem's
        tensors keep the target's own (freshly initialised) values, as the authors' loader skipped
        the stem; every other tensor is still copied.

    Returns
    -------
    mapped : dict
        Every target key except ``.seg_layers.`` ones, with the source weights.
    info : dict
        ``stem``, ``copied``, ``expanded`` (keys whose input channels were padded),
        ``dropped`` (source keys not used), ``stem_init`` and ``stem_random`` (keys left at the target's init).
    """
    if heatmap_init not in ("zero", "random"):
        raise ModelError(f"heatmap_init must be 'zero' or 'random', got '{heatmap_init}'")
    if stem_init not in ("copy", "random"):
        raise ModelError(f"stem_init must be 'copy' or 'random', got '{stem_init}'")
    stems = stems_in(source)
    use = _resolve_stem(stems, stem, source_name) if stems else None
    gen = torch.Generator().manual_seed(seed)
    mapped, expanded, missing, mismatched, used, stem_random = {}, [], [], [], set(), []
    for key, tgt in target.items():
        if ".seg_layers." in key:
            continue
        if stem_init == "random" and re.search(r"(^|\.)stem\.", key):
            mapped[key] = tgt.detach().clone()
            stem_random.append(key)
            continue
        candidates = []
        for k in (key, "encoder." + key[len("decoder.encoder."):] if key.startswith("decoder.encoder.") else None):
            if k is None:
                continue
            candidates.append(k.replace("stem.", f"stem.{use}.", 1) if use is not None and "stem." in k else k)
        src_key = next((k for k in candidates if k in source), None)
        if src_key is None:
            missing.append(key)
            continue
        src = source[src_key]
        used.add(src_key)
        if tuple(src.shape) == tuple(tgt.shape):
            mapped[key] = src.detach().clone().to(tgt.dtype)
        elif (_IN_PROJ_RE.search(key) and src.ndim == tgt.ndim and src.shape[0] == tgt.shape[0]
              and src.shape[2:] == tgt.shape[2:] and src.shape[1] < tgt.shape[1]):
            new = torch.zeros(tgt.shape, dtype=tgt.dtype)
            new[:, :src.shape[1]] = src
            if heatmap_init == "random":
                std = float(src.float().std()) * 0.01
                extra = tgt.shape[1] - src.shape[1]
                new[:, src.shape[1]:] = torch.randn((tgt.shape[0], extra, *tgt.shape[2:]), generator=gen) * std
            mapped[key] = new
            expanded.append(key)
        else:
            mismatched.append(f"{key}: checkpoint {tuple(src.shape)} vs network {tuple(tgt.shape)}")
    if missing or mismatched:
        lines = [f"missing {k}" for k in missing[:5]] + mismatched[:5]
        more = len(missing) + len(mismatched) - len(lines)
        raise ModelError(f"{source_name}: does not fit the network of these plans ({len(missing)} missing, "
                         f"{len(mismatched)} mismatched): " + "; ".join(lines) + (f"; +{more} more" if more else ""))
    dropped = sorted(k for k in source if k not in used)
    return mapped, {"stem": use, "stems_available": stems, "copied": len(mapped) - len(stem_random),
                    "expanded": expanded, "dropped": len(dropped), "heatmap_init": heatmap_init,
                    "stem_init": stem_init, "stem_random": stem_random}


def check_multitalent_intensity(plans: dict, configuration: str, source: str) -> None:
    """Raise :class:`ModelError` unless channels 0 and 1 of ``plans`` use MultiTalent's CT/PET normalisation."""
    from .plans import multitalent_intensity

    want = multitalent_intensity()
    have_props = plans.get("foreground_intensity_properties_per_channel", {})
    schemes = plans["configurations"][configuration].get("normalization_schemes", [])
    bad = [ch for ch in ("0", "1")
           if have_props.get(ch) != want["foreground_intensity_properties_per_channel"][ch]
           or (schemes[int(ch)] if len(schemes) > int(ch) else None) != want["normalization_schemes"][int(ch)]]
    if bad:
        names = {"0": "CT", "1": "PET"}
        raise ModelError(f"{source}: the {' and '.join(names[c] for c in bad)} intensity properties differ from "
                         f"those the MultiTalent stem was trained with; write the plans with `quantif plans "
                         f"--preset resencl192 --intensity-properties multitalent` (then nnUNetv2_preprocess), or "
                         f"pass --any-intensity to initialise anyway")


def convert_multitalent(checkpoint: str | os.PathLike, plans: str | os.PathLike, out: str | os.PathLike,
                        configuration: str = CONFIGURATION, stem: str = "221",
                        dataset_json: str | os.PathLike | None = None, num_input_channels: int | None = None,
                        heatmap_init: str = "zero", use_organs: bool = True, trust_checkpoint: bool = False,
                        check_intensity: bool = True, stem_init: str = "copy") -> dict:
    """Write an nnU-Net ``-pretrained_weights`` file from a MultiTalent checkpoint.

    Parameters
    ----------
    checkpoint : path-like
        The MultiTalent checkpoint (``.pth``).
    plans : path-like
        The plans JSON the model will be trained with (e.g. ``nnUNetResEncUNetLPlans_MT192.json``).
    out : path-like
        Output ``.pth`` (written atomically; must not be the checkpoint).
    configuration : str
        Plans configuration (default ``3d_fullres``).
    stem : str
        Stem to use (default ``221``, autoPET II CT+PET).
    dataset_json : path-like, optional
        ``dataset.json`` giving the number of input channels (default: ``dataset.json`` next to
        the plans, else 3).
    num_input_channels : int, optional
        Overrides ``dataset_json``.
    heatmap_init : {'zero', 'random'}
        See the module docstring.
    use_organs : bool
        Build the dual-head network (True) or the plain one as the target; the keys that
        ``load_pretrained_weights`` checks are the same either way.
    trust_checkpoint : bool
        Unpickle the checkpoint fully (runs any code in it); by default only tensors, plain
        containers and NumPy scalars load (:func:`load_checkpoint_object`).
    check_intensity : bool
        Require the plans' CT and PET normalisation and foreground intensity properties to be
        those the MultiTalent stem was trained with (``quantif plans --intensity-properties
        multitalent`` writes them); a stem fed inputs on another scale starts from the wrong place.
    stem_init : {'copy', 'random'}
        ``random`` leaves the stem at the network's own initialisation, as in the authors' models
        (see :func:`map_multitalent_state_dict`).

    Returns
    -------
    dict
        Conversion info (also stored under ``quantif_pretrained`` in the output).
    """
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from ..config import load_json
    from ..network import build_dual_head_network

    plans_path, out = Path(plans), Path(out)
    if out.resolve() == Path(checkpoint).resolve():
        from ..errors import OverwriteInputError
        raise OverwriteInputError(f"{out}: output would overwrite the input checkpoint")
    if not plans_path.is_file():
        raise ModelError(f"{plans_path}: plans file not found")
    plans_dict = load_json(plans_path)  # a ConfigError naming the file if it is malformed
    if not isinstance(plans_dict, dict) or "configurations" not in plans_dict:
        raise ModelError(f"{plans_path}: not an nnU-Net plans file (no 'configurations')")
    pm = PlansManager(plans_dict)
    try:
        cm = pm.get_configuration(configuration)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"{plans_path}: no configuration '{configuration}' ({e})") from None
    if check_intensity:
        check_multitalent_intensity(plans_dict, configuration, str(plans_path))
    if num_input_channels is None:
        ds_path = Path(dataset_json) if dataset_json else plans_path.parent / "dataset.json"
        num_input_channels = len(load_json(ds_path)["channel_names"]) if ds_path.is_file() else 3
    args = (cm.network_arch_class_name, cm.network_arch_init_kwargs, cm.network_arch_init_kwargs_req_import,
            int(num_input_channels), 2)
    net = build_dual_head_network(*args) if use_organs else get_network_from_plans(*args, allow_init=True,
                                                                                   deep_supervision=True)
    source = load_state_dict_any(checkpoint, trust_checkpoint)
    mapped, info = map_multitalent_state_dict(source, net.state_dict(), stem, heatmap_init, str(checkpoint),
                                              stem_init=stem_init)
    info.update(source=str(checkpoint), plans=str(plans_path), configuration=configuration,
                num_input_channels=int(num_input_channels))
    with atomic_write(out, inputs=[checkpoint, plans_path]) as tmp:
        torch.save({"network_weights": mapped, "quantif_pretrained": info}, tmp)
    return info
