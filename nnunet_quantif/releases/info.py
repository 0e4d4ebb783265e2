"""What ``quantif model info DIR`` and ``quantif model list ROOT`` report about model folders.

A *model folder* is an nnU-Net trained-model folder (``plans.json``, ``dataset.json``, ``fold_<k>/``); an
*imported release* is a folder with ``provenance.json`` whose entries (``fdg/``, ``psma/``, ``model/``,
``tracer/``) are model and tracer folders; a *model set* is a folder with ``models.json``
(:mod:`nnunet_quantif.model_set`). Checkpoints are read with the safe loader only.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import ModelError
from ..layout import CONFIGURATION
from .common import PROVENANCE_NAME, network_parameter_count, read_json_file, read_state_dict

__all__ = ["model_info", "list_models", "describe_model_folder", "describe_tracer_folder", "format_info"]

_FOLD_RE = re.compile(r"^fold_(\d+|all)$")
_TRACER_NAMES = {"fdg": "fdg", "psma": "psma", "model": "any"}


def _is_model_folder(d: Path) -> bool:
    return (d / "plans.json").is_file() and (d / "dataset.json").is_file()


def _is_tracer_folder(d: Path) -> bool:
    return (d / "tracer_meta.json").is_file()


def describe_model_folder(d: Path, tracer: str | None = None) -> dict:
    """Tracer, folds, network, parameter count, input contract and test-time defaults of a model folder."""
    plans, dataset = read_json_file(d / "plans.json"), read_json_file(d / "dataset.json")
    folds = sorted((p.name[5:] for p in d.iterdir() if p.is_dir() and _FOLD_RE.match(p.name)),
                   key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0))
    checkpoints = {f: next((c.name for c in (d / f"fold_{f}").glob("checkpoint_*.pth")), None) for f in folds}
    first = next((d / f"fold_{f}" / c for f, c in checkpoints.items() if c), None)
    weights = read_state_dict(first) if first is not None else None
    configs = plans.get("configurations", {})
    conf = CONFIGURATION if CONFIGURATION in configs else next(iter(configs), None)
    arch = (configs.get(conf) or {}).get("architecture", {}) if conf else {}
    entry = dataset.get("quantif")
    contract = None
    if isinstance(entry, dict):
        contract = entry.get("inputs") or (
            [{"source": "ct"}, {"source": "pet"}, {"source": "clicks", "encoding": "pet_gated_gaussian",
                                                   "params": entry.get("heatmap")}] if "heatmap" in entry else None)
    organ_head = bool(weights) and any(k.startswith("organ_head.") for k in weights)
    encodings = None
    if isinstance(entry, dict):
        from ..heatmap_definition import InputContract

        parsed = InputContract.from_json(entry, str(d / "dataset.json"))
        encodings = {f"_{k:04d}": parsed.inputs[k].describe() for k in parsed.click_indices}
    return {
        "kind": "model", "path": str(d), "tracer": tracer or _TRACER_NAMES.get(d.name, "unknown"),
        "folds": [int(f) if f.isdigit() else f for f in folds],
        "checkpoints": {f: c for f, c in checkpoints.items()},
        "architecture": (str(arch.get("network_class_name", "unknown")).rsplit(".", 1)[-1]
                         + (" + organ head" if organ_head else "")),
        "configuration": conf, "patch_size": (configs.get(conf) or {}).get("patch_size") if conf else None,
        "parameters": network_parameter_count(weights) if weights else None,
        "channels": dataset.get("channel_names"),
        "input_contract": contract,
        "pet_normalization": entry.get("pet_normalization") if isinstance(entry, dict) else None,
        "contract_version": entry.get("version") if isinstance(entry, dict) else None,
        "inference_defaults": (entry.get("inference") or {}) if isinstance(entry, dict) else {},
        "click_encodings": encodings,
        "image_dtype": entry.get("image_dtype", "float32") if isinstance(entry, dict) else None,
    }


def describe_tracer_folder(d: Path) -> dict:
    """Architecture, folds and decision rule of a tracer-classifier folder."""
    try:
        meta = json.loads((d / "tracer_meta.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{d / 'tracer_meta.json'}: unreadable tracer metadata ({e})") from None
    return {"kind": "tracer", "path": str(d), "arch": meta.get("arch", "quantif"),
            "folds": len(meta.get("fold_files", [])), "decision": meta.get("decision")}


def _set_tracers(d: Path) -> dict[str, str]:
    """Folder name -> tracer of the model folders a model set in ``d`` names directly (its models and click
    rules); empty without a set."""
    from ..model_set import is_model_set, read_model_set

    if not is_model_set(d):
        return {}
    s = read_model_set(d, check_files=False)
    out = {rel: key for key, rel in s.models.items()}
    for rule in s.click_rules:
        out.setdefault(rule.model, rule.tracer or "any")
    return out


def model_info(folder: str | os.PathLike) -> dict:
    """Everything ``quantif model info`` reports about an imported release, a model folder or a tracer folder.

    Returns
    -------
    dict
        ``path``, ``release``, ``licence``, ``provenance`` (source, import date, link; without the digests)
        and ``models``: one :func:`describe_model_folder` / :func:`describe_tracer_folder` dict per entry.

    Raises
    ------
    ModelError
        The folder is none of those.
    """
    d = Path(folder)
    if not d.is_dir():
        raise ModelError(f"{d}: folder not found")
    prov_path = d / PROVENANCE_NAME if (d / PROVENANCE_NAME).is_file() else d.parent / PROVENANCE_NAME
    prov = read_json_file(prov_path) if prov_path.is_file() else None
    if _is_model_folder(d):
        entries = [describe_model_folder(d)]
    elif _is_tracer_folder(d):
        entries = [describe_tracer_folder(d)]
    else:
        entries = []
        tracers = _set_tracers(d)
        for sub in sorted(p for p in d.iterdir() if p.is_dir()):
            if _is_model_folder(sub):
                entries.append(describe_model_folder(sub, tracer=tracers.get(sub.name)))
            elif _is_tracer_folder(sub):
                entries.append(describe_tracer_folder(sub))
        if not entries and (d / "models.json").is_file():  # a set whose folders lie elsewhere
            from ..model_set import read_model_set

            model_set = read_model_set(d)
            entries = [describe_model_folder(model_set.resolve(rel), tracer=key)
                       for key, rel in model_set.models.items()]
        if not entries:
            raise ModelError(f"{d}: not a model folder, tracer folder, model set or imported release")
    out: dict = {"path": str(d), "release": None, "licence": None, "provenance": None, "models": entries}
    from ..model_set import describe_model_set, is_model_set

    if is_model_set(d):
        out["model_set"] = describe_model_set(d)
    if prov is not None:
        out["release"] = prov.get("release")
        out["licence"] = prov.get("licence")
        out["provenance"] = {k: prov.get(k) for k in ("repository", "release_link", "source", "import_date")}
        out["provenance"]["source_files"] = len(prov.get("source_sha256", {}))
    return out


def list_models(root: str | os.PathLike) -> list[dict]:
    """:func:`model_info` of every imported release, model folder and tracer folder under ``root``
    (a folder inside a release is reported with its release, not again on its own)."""
    root = Path(root)
    if not root.is_dir():
        raise ModelError(f"{root}: folder not found")
    found: list[dict] = []

    def walk(d: Path, depth: int) -> None:
        if (d / PROVENANCE_NAME).is_file() or (d / "models.json").is_file() or _is_model_folder(d) \
                or _is_tracer_folder(d):
            found.append(model_info(d))
            return
        if depth >= 6:
            return
        for sub in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
            walk(sub, depth + 1)

    walk(root, 0)
    return found


def format_info(info: dict) -> str:
    """Human-readable lines of a :func:`model_info` dict."""
    lines = [f"{info['path']}"]
    if info.get("release"):
        prov = info.get("provenance") or {}
        lines.append(f"  release: {info['release']} (imported {prov.get('import_date')} from {prov.get('source')}, "
                     f"{prov.get('source_files')} source files with SHA-256)")
        lines.append(f"  link: {prov.get('release_link')}")
        lines.append(f"  licence: {info.get('licence')}")
    if info.get("model_set"):
        lines += ["  " + line for line in info["model_set"]["description"]]
    for m in info["models"]:
        if m["kind"] == "tracer":
            lines.append(f"  tracer classifier {m['path']}: arch {m['arch']}, {m['folds']} folds; {m['decision']}")
            continue
        params = f"{m['parameters']:,}" if m.get("parameters") else "?"
        lines.append(f"  model {m['path']}: tracer {m['tracer']}, folds {m['folds'] or 'none'}, "
                     f"{m['architecture']} ({params} parameters), patch {m['patch_size']}")
        if m.get("input_contract"):
            chans = []
            for c in m["input_contract"]:
                name = c.get("source", "?")
                if name == "clicks":
                    label = (c.get("params") or {}).get("label")
                    name += f"/{c.get('encoding')}" + (f"/{label}" if label else "")
                chans.append(name)
            lines.append(f"    inputs: {', '.join(chans)}; PET normalisation {m.get('pet_normalization')}")
            for channel, text in (m.get("click_encodings") or {}).items():
                lines.append(f"    click channel {channel}: {text}")
            if m.get("image_dtype") not in (None, "float32"):
                lines.append(f"    CT and PET cast to {m['image_dtype']} before preprocessing")
        else:
            lines.append(f"    inputs: {m.get('channels')} (no input contract recorded)")
        if m.get("inference_defaults"):
            lines.append(f"    test-time defaults: {json.dumps(m['inference_defaults'])}")
    return "\n".join(lines)
