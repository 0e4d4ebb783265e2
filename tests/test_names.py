"""Each name and each axis-order flip has one home: grep-style checks over the package source, and the homes'
own behaviour (``layout``'s dataset folders and model folder names, ``Geometry``'s array-order accessors)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import nnunet_quantif
from nnunet_quantif.errors import DatasetError
from nnunet_quantif.io import Geometry
from nnunet_quantif.layout import (
    CONFIGURATION,
    TRACERS,
    check_dataset_spec,
    dataset_glob,
    find_dataset_folder,
    model_folder_name,
)

PACKAGE = Path(nnunet_quantif.__file__).resolve().parent
SOURCES = sorted(PACKAGE.rglob("*.py"))
#: Keyword arguments whose strings are prose for people (argparse help), not names the code uses.
PROSE_KEYWORDS = {"help", "description", "epilog"}
#: Folder and configuration names that only ``layout`` spells out.
LAYOUT_NAMES = ("imagesTr", "labelsTr", "imagesTs", "clicksTr", "organsTr", CONFIGURATION)
#: ``[::-1]`` outside ``Geometry`` and ``clicks.py`` that is not about coordinates: (file, code, why).
NOT_COORDINATES = [
    ("evaluation/plots.py", "mip[::-1]", "turns a MIP image upside down for display (image rows)"),
    ("network.py", "lesion[::-1], organ[::-1]", "the decoder outputs, deepest first -> highest resolution first"),
]


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string the code uses: docstrings and argparse prose left out; an f-string's
    replacement fields are written ``{}``."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in PROSE_KEYWORDS:
                    skip.update(id(n) for n in ast.walk(kw.value))
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.JoinedStr):
            skip.update(id(n) for n in ast.walk(node))
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            out.append((node.lineno, str(text)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, node.value))
    return out


@pytest.fixture(scope="module")
def trees() -> dict[str, ast.Module]:
    return {_rel(p): ast.parse(p.read_text(), filename=str(p)) for p in SOURCES}


def test_folder_and_configuration_names_only_in_layout(trees):
    found = [f"{name}:{line}: {text!r}" for name, tree in trees.items() if name != "layout.py"
             for line, text in _strings(tree) if any(n in text for n in LAYOUT_NAMES)]
    assert not found, "use the names of nnunet_quantif.layout:\n" + "\n".join(found)


def test_dataset_globs_and_model_folder_names_only_in_layout(trees):
    glob = re.compile(r"Dataset(\{\}|\*|\\d)")
    found = [f"{name}:{line}: {text!r}" for name, tree in trees.items() if name != "layout.py"
             for line, text in _strings(tree) if glob.search(text) or re.search(r"\}__\$?\{", text)]
    assert not found, "use layout.find_dataset_folder / dataset_glob / model_folder_name:\n" + "\n".join(found)


def test_tracers_defined_once(trees):
    where = []
    for name, tree in trees.items():
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) else []
            where += [name for t in targets if isinstance(t, ast.Name) and t.id == "TRACERS"]
    assert where == ["layout.py"]
    assert TRACERS == ("fdg", "psma")


def test_no_coordinate_flip_outside_geometry_and_clicks(trees):
    geometry = next(n for n in ast.walk(trees["io.py"]) if isinstance(n, ast.ClassDef) and n.name == "Geometry")
    inside = range(geometry.lineno, geometry.end_lineno + 1)
    allowed = {(f, code) for f, code, _ in NOT_COORDINATES}
    found, used = [], set()
    for path in SOURCES:
        name = _rel(path)
        if name == "clicks.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if "::-1]" not in line or (name == "io.py" and i in inside):
                continue
            hit = next(((f, c) for f, c in allowed if f == name and c in line), None)
            if hit is None:
                found.append(f"{name}:{i}: {line.strip()}")
            used.add(hit)
    assert not found, "use Geometry's array-order accessors (origin_zyx, to_array_order, ...):\n" + "\n".join(found)
    assert used - {None} == allowed, "an entry of NOT_COORDINATES matches nothing any more; remove it"


def test_repeated_defaults_have_one_home(trees):
    """The default mirroring policy, device auto-resolution and the heatmap background modes."""
    problems = []
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.args[len(node.args.args) - len(node.args.defaults):] + node.args.kwonlyargs
                defaults = node.args.defaults + [d for d in node.args.kw_defaults]
                pairs = list(zip(args, defaults))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                pairs = [(ast.arg(arg=node.target.id), node.value)]
            else:
                pairs = []
            problems += [f"{name}:{node.lineno}: {a.arg} defaults to 'paper' (use mirroring.DEFAULT_POLICY)"
                         for a, d in pairs if "mirroring" in a.arg and isinstance(d, ast.Constant)
                         and d.value == "paper" and name != "inference/mirroring.py"]
            if isinstance(node, ast.Tuple) and name != "heatmaps.py" and \
                    [getattr(e, "value", None) for e in node.elts] == ["paper", "authors"]:
                problems.append(f"{name}:{node.lineno}: ('paper', 'authors') (use heatmaps.BACKGROUND_MODES)")
            if isinstance(node, ast.Attribute) and node.attr == "is_available" and name != "devices.py" and \
                    isinstance(node.value, ast.Attribute) and node.value.attr == "cuda":
                problems.append(f"{name}:{node.lineno}: cuda.is_available (use devices.resolve_device)")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------------ layout
def test_find_dataset_folder_refuses_several_matches(tmp_path):
    (tmp_path / "Dataset501_QuantIFFDG").mkdir()
    assert find_dataset_folder(tmp_path, 501) == tmp_path / "Dataset501_QuantIFFDG"
    assert find_dataset_folder(tmp_path, "Dataset501_QuantIFFDG") == tmp_path / "Dataset501_QuantIFFDG"
    (tmp_path / "Dataset501_Other").mkdir()
    with pytest.raises(DatasetError, match="several .*Dataset501_Other, Dataset501_QuantIFFDG"):
        find_dataset_folder(tmp_path, "501")
    with pytest.raises(DatasetError, match="several"):
        find_dataset_folder(tmp_path, 501, missing_ok=True)  # missing_ok does not hide an ambiguity
    assert find_dataset_folder(tmp_path, 502, missing_ok=True) is None
    with pytest.raises(DatasetError, match="no dataset folder Dataset502_"):
        find_dataset_folder(tmp_path, 502)


def test_slurm_summary_refuses_several_dataset_folders(tmp_path):
    from nnunet_quantif.slurm import SlurmError, training_summary

    record = {"results": str(tmp_path), "plans": "P", "configuration": CONFIGURATION,
              "tasks": [{"tracer": "fdg", "fold": 0, "dataset": "901", "trainer": "T"}]}
    fold = tmp_path / "Dataset901_A" / model_folder_name("T", "P") / "fold_0"
    fold.mkdir(parents=True)
    (fold / "checkpoint_final.pth").write_bytes(b"x")
    assert training_summary(record)["folds"][0]["status"] == "final"
    (tmp_path / "Dataset901_B").mkdir()
    with pytest.raises(SlurmError, match="several .*Dataset901_A, Dataset901_B"):
        training_summary(record)


def test_dataset_and_model_folder_names():
    assert dataset_glob(7) == dataset_glob("7") == "Dataset007_*"
    assert dataset_glob("Dataset007_X") == "Dataset007_X"
    assert check_dataset_spec(901) == "901" and check_dataset_spec("Dataset901_Q.v1") == "Dataset901_Q.v1"
    for bad in ("D901", "Dataset1_X", "../Dataset901_X", ""):
        with pytest.raises(DatasetError, match="give an id"):
            check_dataset_spec(bad)
    assert model_folder_name("nnUNetTrainer", "nnUNetPlans") == "nnUNetTrainer__nnUNetPlans__3d_fullres"
    assert model_folder_name("T", "P", "2d") == "T__P__2d"


# ------------------------------------------------------------------------------------------------ Geometry
def test_geometry_array_order_accessors():
    # a rotated, anisotropic, shifted grid: array order differs from image order in every field
    rot = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    g = Geometry((10, 20, 30), (2.0, 3.0, 5.0), origin=(-100.0, 50.0, 7.0), direction=rot)
    assert g.shape == (30, 20, 10) and g.spacing_zyx == (5.0, 3.0, 2.0) and g.origin_zyx == (7.0, 50.0, -100.0)
    assert g == Geometry.from_shape(g.shape, g.spacing_zyx, origin=g.origin, direction=rot)
    np.testing.assert_array_equal(Geometry.to_array_order([1, 2, 3]), [3, 2, 1])
    pts = np.array([[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(Geometry.to_array_order(pts), [[3, 2, 1], [6, 5, 4]])
    np.testing.assert_array_equal(Geometry.to_image_order(Geometry.to_array_order(pts)), pts)
    # the voxel at array index (z, y, x) = (29, 11, 4) is image index (x, y, z) = (4, 11, 29)
    p = g.array_index_to_physical((29, 11, 4))
    np.testing.assert_allclose(p, g.index_to_physical((4, 11, 29)))
    np.testing.assert_allclose(p, np.asarray(g.origin) + g.direction_matrix @ (np.array([4, 11, 29]) * g.spacing))
    near = g.nearest_array_index(p + 0.4 * g.direction_matrix @ np.asarray(g.spacing))
    assert near.dtype == np.int64 and tuple(near) == (29, 11, 4)
    assert tuple(g.nearest_array_index(g.array_index_to_physical((-5, 25, 3)))) == (0, 19, 3)  # clipped
    arr = np.zeros(g.shape)
    arr[tuple(near)] = 1  # addresses the array directly
    assert arr[29, 11, 4] == 1
