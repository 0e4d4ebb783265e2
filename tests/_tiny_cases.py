"""Small evaluation cases cut from the synthetic phantoms, and tiny random model folders and sets, for the
model-set and ``quantif compare`` tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nnunet_quantif.clicks import simulate_clicks, write_clicks
from nnunet_quantif.io import Geometry, write_image
from nnunet_quantif.phantoms import case_name, generate_case

#: (z, y, x) of a cut.
BOX = (12, 16, 16)


def _cut(case) -> tuple[slice, ...]:
    centre = case.lesions[0]["centre_zyx"] if case.lesions else [s // 2 for s in case.pet.shape]
    out = []
    for c, b, s in zip(centre, BOX, case.pet.shape):
        lo = int(min(max(int(c) - b // 2, 0), s - b))
        out.append(slice(lo, lo + b))
    return tuple(out)


def write_cases(root: Path, specs=(("fdg", 1), ("psma", 2))) -> Path:
    """Write an autoPET-layout folder (imagesTr/, labelsTr/, clicks/) of phantom cuts around a lesion, with
    10 + 10 clicks simulated from the label (seed 0). Returns ``root``."""
    for tracer, seed in specs:
        case = generate_case(tracer, "small", seed=seed, healthy=False)
        box = _cut(case)
        geo = Geometry.from_shape(BOX, case.geometry.spacing_zyx)
        name = case_name(tracer, seed, 0)
        ct, pet, label = case.ct[box], case.pet[box].astype(np.float32), case.label[box]
        write_image(ct.astype(np.float32), geo, root / "imagesTr" / f"{name}_0000.nii.gz")
        write_image(pet, geo, root / "imagesTr" / f"{name}_0001.nii.gz")
        write_image(label.astype(np.uint8), geo, root / "labelsTr" / f"{name}.nii.gz")
        write_clicks(simulate_clicks(label, pet, n=10, seed=0), root / "clicks" / f"{name}_clicks.json")
    return root


def tiny_model(path: Path, seed: int = 0, constant_output: int | None = None) -> Path:
    """A tiny random QuantIF model folder (fold 0, patch 16^3, no mirroring)."""
    from nnunet_quantif.testing.random_model import write_random_model

    return write_random_model(path, folds=(0,), patch_size=(16, 16, 16), spacing_zyx=(6.0, 5.0, 5.0), seed=seed,
                              constant_output=constant_output, mirror_axes=None)


def write_set(folder: Path, obj: dict) -> Path:
    """Write ``folder/models.json`` as given (no checks), with the format and version filled in."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.json").write_text(json.dumps({"format": "quantif-model-set", "version": 1, **obj}))
    return folder
