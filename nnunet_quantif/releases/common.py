"""What the release importers share: safe checkpoint reading, key mapping, digests, provenance and the
atomic output folder.

Checkpoints are read with :func:`~nnunet_quantif.training.pretrained.load_checkpoint_object`, i.e.
``torch.load(weights_only=True)`` with an allow-list. Besides tensors and plain containers (dict, list,
tuple, str, int, float, bool, None, ``torch.device``, ``OrderedDict``: PyTorch's own ``weights_only``
set), a real nnU-Net checkpoint holds NumPy scalars in its ``logging`` and ``_best_ema`` entries, so the
allow-list adds exactly :data:`ALLOWED_GLOBALS`. A file that needs anything else (a class, a function:
what a pickle that runs code needs) is refused before any of it runs.

An import writes its output folder in a temporary folder beside ``DST`` and renames it to ``DST`` at the
end, so an error leaves nothing behind; an existing non-empty ``DST`` is refused unless ``force``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import torch

from ..checkpoints import ALLOWED_GLOBALS, read_checkpoint, read_state_dict, safe_globals, state_dict_of
from ..errors import ModelError, OutputPathError, OverwriteInputError
from ..layout import CONFIGURATION

log = logging.getLogger(__name__)

__all__ = ["ALLOWED_GLOBALS", "PROVENANCE_NAME", "safe_globals", "read_checkpoint", "read_state_dict", "state_dict_of",
           "map_state_dict",
           "sha256_file", "folder_digests", "staged_output", "write_json_file", "read_json_file",
           "contract_entry", "plans_channel_count", "normalize_mirror_axes", "clean_checkpoint", "find_folds",
           "write_release_model_set", "RESENC_ORGAN_CLASS", "import_model_folder"]

#: File of an imported release that records where it came from.
PROVENANCE_NAME = "provenance.json"

_CHUNK = 1 << 20


def map_state_dict(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], *,
                   renames: Iterable[tuple[str, str]] = (), source_name: str = "checkpoint",
                   limit: int = 3) -> dict[str, torch.Tensor]:
    """Rename the keys of ``source`` and check they are exactly those of ``target``, with equal shapes.

    Parameters
    ----------
    source : dict
        State dict read from a release.
    target : dict
        State dict of the network the model folder will be loaded into.
    renames : iterable of (str, str)
        Key prefix replacements (source prefix, target prefix), applied in order, first match only.
    source_name : str
        The file, for the message.
    limit : int
        How many keys of each kind the message names.

    Returns
    -------
    dict
        The renamed source tensors (contiguous, on CPU), in the target's key order.

    Raises
    ------
    ModelError
        One line naming the first ``limit`` missing, extra and shape-mismatched keys.
    """
    renames = list(renames)
    renamed: dict[str, torch.Tensor] = {}
    for k, v in source.items():
        for old, new in renames:
            if k.startswith(old):
                k = new + k[len(old):]
                break
        renamed[k] = v
    missing = [k for k in target if k not in renamed]
    extra = [k for k in renamed if k not in target]
    mismatched = [f"{k} {tuple(renamed[k].shape)} vs {tuple(target[k].shape)}" for k in target
                  if k in renamed and tuple(renamed[k].shape) != tuple(target[k].shape)]
    if missing or extra or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("extra", extra), ("shape mismatch (file vs network)", mismatched)):
            if keys:
                more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:limit])}{more}")
        raise ModelError(f"{source_name}: the weights do not fit the network of its plans: {'; '.join(parts)}")
    return {k: renamed[k].detach().to("cpu").contiguous() for k in target}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def folder_digests(folder: str | os.PathLike, relative_to: str | os.PathLike | None = None) -> dict[str, str]:
    """SHA-256 of every regular file under ``folder`` (recursively), keyed by POSIX path relative to
    ``relative_to`` (default ``folder``), sorted."""
    root = Path(folder)
    base = Path(relative_to) if relative_to is not None else root
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(base).as_posix(): sha256_file(p) for p in files}


def _is_within(a: Path, b: Path) -> bool:
    try:
        a.resolve().relative_to(b.resolve())
        return True
    except ValueError:
        return False


@contextlib.contextmanager
def staged_output(dst: str | os.PathLike, *, force: bool = False, inputs: Iterable[str | os.PathLike] = ()
                  ) -> Iterator[Path]:
    """A temporary folder beside ``dst`` that becomes ``dst`` when the block ends without an error.

    Parameters
    ----------
    dst : path-like
        The output folder.
    force : bool
        Replace an existing non-empty ``dst`` (it is removed only after the new folder is complete).
    inputs : iterable of path-like
        Source folders; ``dst`` may not lie inside one, nor contain one.

    Raises
    ------
    OutputPathError
        ``dst`` is a file, or a non-empty folder and not ``force``.
    OverwriteInputError
        ``dst`` and a source folder overlap.
    """
    dst = Path(dst)
    for src in inputs:
        src = Path(src)
        if _is_within(dst, src) or _is_within(src, dst):
            raise OverwriteInputError(f"{dst}: the output folder overlaps the source {src}")
    if dst.exists() and not dst.is_dir():
        raise OutputPathError(f"{dst}: exists and is not a folder")
    if dst.is_dir() and any(dst.iterdir()) and not force:
        raise OutputPathError(f"{dst}: folder exists and is not empty (pass --force to replace it)")
    parent = dst.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=parent))
    except OSError as e:
        raise OutputPathError(f"{dst}: cannot create the output folder ({e.strerror or e})") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o777 & ~_umask())
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=parent))
        os.rmdir(old)
        os.replace(dst, old)
    os.replace(tmp, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_file(obj: object, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON (inside a staged folder; no atomic rename needed)."""
    path = Path(path)
    path.write_text(json.dumps(obj, indent=2) + "\n")
    return path


def read_json_file(path: str | os.PathLike) -> dict:
    """A JSON object from a release, with a :class:`ModelError` naming the file if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: not found")
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: not a JSON object")
    return obj


def plans_channel_count(plans: Mapping, configuration: str, source: str) -> int:
    """The number of input channels a plans file describes (normalisation schemes of ``configuration`` and
    foreground intensity properties must agree)."""
    try:
        schemes = plans["configurations"][configuration]["normalization_schemes"]
    except (KeyError, TypeError):
        raise ModelError(f"{source}: no normalization_schemes for configuration '{configuration}'") from None
    props = plans.get("foreground_intensity_properties_per_channel", {})
    if props and len(props) != len(schemes):
        raise ModelError(f"{source}: {len(schemes)} normalisation schemes but intensity properties of "
                         f"{len(props)} channels")
    return len(schemes)


def normalize_mirror_axes(axes: object) -> tuple[int, ...] | None:
    """``inference_allowed_mirroring_axes`` as a tuple: a bare integer (``(2)`` in Python is the int 2)
    becomes a one-axis tuple."""
    if axes is None:
        return None
    if isinstance(axes, int):
        return (int(axes),)
    return tuple(int(a) for a in axes)  # type: ignore[union-attr]


def clean_checkpoint(weights: Mapping[str, torch.Tensor], *, trainer_name: str, configuration: str, fold: int,
                     mirror_axes: tuple[int, ...] | None, imported: Mapping) -> dict:
    """The checkpoint an imported model folder holds: what ``nnUNetPredictor`` reads (``network_weights``,
    ``trainer_name``, ``init_args.configuration``, ``inference_allowed_mirroring_axes``) plus
    ``quantif_import`` (where it came from); no optimizer state."""
    return {"network_weights": dict(weights), "trainer_name": trainer_name,
            "init_args": {"configuration": configuration, "fold": int(fold)},
            "inference_allowed_mirroring_axes": mirror_axes, "quantif_import": dict(imported)}


_FOLD_RE = re.compile(r"^fold_(\d+)$")


def find_folds(model_dir: Path, expected: Iterable[int], *, fallback: str | None = "checkpoint_latest.pth",
               name: str = "checkpoint_final.pth") -> tuple[dict[int, Path], list[int]]:
    """The checkpoint of each ``fold_<k>`` folder of a release model folder.

    Returns
    -------
    found : dict
        fold -> checkpoint path (``name``, else ``fallback`` with a warning).
    missing : list of int
        Expected folds without a folder.

    Raises
    ------
    ModelError
        A fold folder without a checkpoint, or no fold at all.
    """
    have = sorted(int(m.group(1)) for p in model_dir.iterdir() if p.is_dir() and (m := _FOLD_RE.match(p.name)))
    found: dict[int, Path] = {}
    for k in have:
        fold_dir = model_dir / f"fold_{k}"
        if (fold_dir / name).is_file():
            found[k] = fold_dir / name
        elif fallback and (fold_dir / fallback).is_file():
            log.warning("%s: no %s, importing %s", fold_dir, name, fallback)
            found[k] = fold_dir / fallback
        else:
            raise ModelError(f"{fold_dir}: fold folder without a checkpoint ({name}"
                             f"{' or ' + fallback if fallback else ''} not found)")
    if not found:
        raise ModelError(f"{model_dir}: no fold_<k> folder with a checkpoint")
    missing = [k for k in expected if k not in found]
    return found, missing


def contract_entry(inputs: list[dict], pet_normalization: str, inference: Mapping, *,
                   heatmap: Mapping | None = None) -> dict:
    """The ``quantif`` entry (input contract, version 2) of an imported model's ``dataset.json``.

    Parameters
    ----------
    inputs : list of dict
        The ordered channels (``{"source": "ct"}``, ``{"source": "pet"}``, ``{"source": "clicks",
        "encoding": NAME, "params": {...}}``).
    pet_normalization : str
        How the plans normalise the PET channel (nnU-Net channel-name form: ``CT``, ``noNorm``, ``zscore``).
    inference : dict
        The model's test-time defaults.
    heatmap : dict, optional
        The version-1 heatmap entry, written when there is exactly one ``pet_gated_gaussian`` channel.
    """
    from ..heatmap_definition import InputContract

    entry: dict = {"version": 2, "inputs": inputs, "pet_normalization": pet_normalization}
    if heatmap is not None:
        entry["heatmap"] = dict(heatmap)
    entry["inference"] = dict(inference)
    InputContract.from_json(entry, source="the imported model's contract")  # the contract module can read it
    return entry


#: nnU-Net normalisation class name -> channel-name form of the contract's ``pet_normalization``.
NORMALIZATION_NAMES: dict[str, str] = {"CTNormalization": "CT", "NoNormalization": "noNorm",
                                       "ZScoreNormalization": "zscore"}


def source_configuration(plans: dict, dataset: Mapping, checkpoint: Mapping, plans_path: Path,
                         checkpoint_path: Path, n_inputs: int, contract_text: str) -> tuple[str, str]:
    """The configuration a release's checkpoint names and the PET normalisation of its plans, both checked.

    Parameters
    ----------
    plans, dataset : dict
        The release's ``plans.json`` and ``dataset.json``.
    checkpoint : dict
        One of its checkpoints (``init_args.configuration``; ``3d_fullres`` when absent).
    plans_path, checkpoint_path : Path
        For messages.
    n_inputs : int
        Input channels of the release's contract.
    contract_text : str
        The contract in words, for the channel-count message (``"the baseline's input contract has 4 (...)"``).

    Returns
    -------
    configuration : str
    pet_normalization : str
        The contract's name of the plans' PET normalisation (:data:`NORMALIZATION_NAMES`).

    Raises
    ------
    ModelError
        The plans lack the configuration, the plans or dataset.json disagree with ``n_inputs``, or the PET
        normalisation has no contract name.
    """
    configuration = str((checkpoint.get("init_args") or {}).get("configuration", CONFIGURATION))
    if configuration not in plans.get("configurations", {}):
        raise ModelError(f"{plans_path}: no configuration '{configuration}' (named by {checkpoint_path})")
    n_channels = plans_channel_count(plans, configuration, str(plans_path))
    n_names = len(dataset.get("channel_names", {}))
    if n_channels != n_inputs or n_names != n_inputs:
        raise ModelError(f"{plans_path}: {n_channels} input channels in the plans and {n_names} in dataset.json, "
                         f"but {contract_text}")
    scheme = plans["configurations"][configuration]["normalization_schemes"][1]
    if scheme not in NORMALIZATION_NAMES:
        raise ModelError(f"{plans_path}: PET normalisation {scheme!r} is not one the input contract names "
                         f"({', '.join(NORMALIZATION_NAMES)})")
    return configuration, NORMALIZATION_NAMES[scheme]


def import_date() -> str:
    """Now, UTC, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def network_parameter_count(weights: Mapping[str, torch.Tensor]) -> int:
    """Number of values in a state dict, counting ``decoder.encoder.*`` (the decoder's reference to the
    encoder) once."""
    return int(sum(v.numel() for k, v in weights.items() if not k.startswith("decoder.encoder.")
                   and v.is_floating_point()))


def write_release_model_set(out: Path, release: str, *, router: str, models: Mapping[str, str],
                            router_weights: str | None = None, click_rules: Iterable[Mapping] = (),
                            postprocess: Mapping[str, object] | None = None) -> Path:
    """Write the model set of an imported release, ``out/models.json`` (:mod:`nnunet_quantif.model_set`), so
    that ``--models DST`` runs the release as its team runs it.

    Parameters
    ----------
    out : Path
        The (staged) output folder; the folders named are relative to it and must exist.
    release : str
        The release name (the set's name).
    router, models, router_weights, click_rules, postprocess
        The set's fields (see :func:`nnunet_quantif.model_set.write_model_set`).
    """
    from ..model_set import write_model_set

    return write_model_set(out, router=router, models=models, router_weights=router_weights,
                           click_rules=list(click_rules), postprocess=postprocess, name=release)


#: The network class that the QuantIF authors' and LesionLocator's plans may name (a residual-encoder U-Net with an
#: organ head, ``…ResidualEncoderUNetOrgan``), and the dynamic-network-architectures class written in its place.
RESENC_ORGAN_CLASS = ("ResidualEncoderUNetOrgan",
                      "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet")


def import_model_folder(model_dir: Path, out: Path, *, release: str, trainer: str, expected_folds: Iterable[int],
                        n_preprocessed: int, channels_reason: str,
                        make_dataset: Callable[[dict, str, dict], dict],
                        make_network: Callable[[object, int, dict], torch.nn.Module] | None = None,
                        select_weights: Callable[[dict], dict] | None = None,
                        renames: Iterable[tuple[str, str]] = (), only_expected: bool = False) -> dict:
    """Write one nnU-Net model folder ``out`` from a release's model folder ``model_dir``.

    Every fold checkpoint found (:func:`find_folds`; missing ones are named in one warning line) is read without
    unpickling code, its weights are mapped onto the network the written plans build (:func:`map_state_dict`: any
    missing, extra or mismatched key is one error) and written as a clean checkpoint of ``trainer``.

    Parameters
    ----------
    model_dir : Path
        The release's folder holding ``plans.json``, ``dataset.json`` and ``fold_k/``.
    out : Path
        The model folder to write (created; must not exist).
    release : str
        The release's name, recorded in each checkpoint.
    trainer : str
        The trainer name of the written checkpoints.
    expected_folds : iterable of int
        The folds the release has.
    n_preprocessed : int
        Channels the plans must normalise; ``channels_reason`` says why, for the error.
    make_dataset : callable
        ``(dataset, pet_normalization, found) -> dataset``: the written ``dataset.json`` (its ``quantif`` input
        contract), from the release's, the PET normalisation of its plans and the folds found.
    make_network : callable, optional
        ``(configuration_manager, n_outputs, dataset) -> network`` whose state dict the weights must fill; default:
        the plans' network with one input per ``dataset["channel_names"]`` entry, no deep supervision.
    select_weights : callable, optional
        ``weights -> weights`` applied before the mapping (e.g. to drop a head inference does not use).
    renames : iterable of (str, str)
        Key renames of :func:`map_state_dict`.
    only_expected : bool
        Import only ``expected_folds`` (folds beyond them are named in one warning line and left out).

    Returns
    -------
    dict
        The model's provenance entry (source, trainer, configuration, folds, network, parameters, ...).
    """
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_path = model_dir / "plans.json"
    plans, dataset = read_json_file(plans_path), read_json_file(model_dir / "dataset.json")
    expected = tuple(expected_folds)
    found, missing = find_folds(model_dir, expected)
    if missing:
        log.warning("%s: folds %s missing; importing folds %s", model_dir, ", ".join(map(str, missing)),
                    ", ".join(map(str, found)))
    extra = [k for k in found if k not in expected]
    if only_expected and extra:
        log.warning("%s: folds %s are not part of the release's ensemble; not imported", model_dir,
                    ", ".join(map(str, extra)))
        found = {k: path for k, path in found.items() if k in expected}
        if not found:
            raise ModelError(f"{model_dir}: none of the folds {', '.join(map(str, expected))} of the release")
    first = read_checkpoint(found[min(found)])
    source_trainer = first.get("trainer_name")
    configuration, pet_normalization = source_configuration(plans, dataset, first, plans_path, found[min(found)],
                                                            n_preprocessed, channels_reason)
    arch = plans["configurations"][configuration].get("architecture", {})
    if str(arch.get("network_class_name", "")).endswith(RESENC_ORGAN_CLASS[0]):
        arch["network_class_name"] = RESENC_ORGAN_CLASS[1]
    dataset = make_dataset(dict(dataset), pet_normalization, found)
    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    n_out = pm.get_label_manager(dataset).num_segmentation_heads
    if make_network is None:
        net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                     cm.network_arch_init_kwargs_req_import, len(dataset["channel_names"]), n_out,
                                     allow_init=True, deep_supervision=False)
    else:
        net = make_network(cm, n_out, dataset)
    target = net.state_dict()
    network = cm.network_arch_class_name.rsplit(".", 1)[-1]
    del net
    out.mkdir()
    write_json_file(plans, out / "plans.json")
    write_json_file(dataset, out / "dataset.json")
    if (model_dir / "dataset_fingerprint.json").is_file():
        shutil.copyfile(model_dir / "dataset_fingerprint.json", out / "dataset_fingerprint.json")
    params, dropped = 0, 0
    for k, path in found.items():
        ck, first = (first, None) if first is not None else (read_checkpoint(path), None)
        weights = state_dict_of(ck, path)
        kept = select_weights(weights) if select_weights is not None else weights
        dropped = len(weights) - len(kept)
        mapped = map_state_dict(kept, target, renames=renames, source_name=str(path))
        params = network_parameter_count(mapped)
        (out / f"fold_{k}").mkdir()
        torch.save(clean_checkpoint(
            mapped, trainer_name=trainer, configuration=configuration, fold=k,
            mirror_axes=normalize_mirror_axes(ck.get("inference_allowed_mirroring_axes", (0, 1, 2))),
            imported={"release": release, "source": str(path), "source_trainer_name": ck.get("trainer_name")}),
            out / f"fold_{k}" / "checkpoint_final.pth")
        del ck, weights, kept, mapped
    entry = {"source": str(model_dir), "trainer_name": trainer, "source_trainer_name": source_trainer,
             "configuration": configuration, "folds": sorted(found), "missing_folds": missing,
             "checkpoints": {str(k): p.name for k, p in found.items()}, "network": network,
             "parameters": params, "pet_normalization": pet_normalization}
    if select_weights is not None:
        entry["tensors_dropped"] = dropped
    return entry
