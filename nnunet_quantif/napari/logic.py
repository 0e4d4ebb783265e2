"""The napari widget's logic, as plain functions without Qt or napari.

Coordinates
-----------
napari's world frame here is (z, y, x) in mm: each image layer gets ``scale = geometry.spacing_zyx`` and
``translate = geometry.origin_zyx``, so the centre of voxel (z, y, x) = (k, j, i) lies at
``origin_zyx + (k, j, i) * spacing_zyx``. napari draws pixel centres at integer data coordinates, so the voxel
under a world position is the rounded data coordinate. The direction cosines are not applied (napari draws the
array axis-aligned): for an identity direction the world frame is the physical (LPS) frame; otherwise it is the
image's index frame scaled and shifted, which is still exact for clicks because the layers and the conversions
below use the same transform.

The widget works in array order throughout: world points are (z, y, x) mm, and clicks are voxel indices
(z, y, x), handed to :meth:`Session.add_click_zyx <nnunet_quantif.interactive.Session.add_click_zyx>` as they are.
Only the click files hold (x, y, z) (:mod:`nnunet_quantif.clicks` converts).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..clicks import DEFAULT_MAX_CLICKS, Clicks, read_clicks
from ..errors import ClickError, ConfigError, InputFileError
from ..inference.options import PipelineOptions, check_device
from ..interactive import AUTOPET_V_SUFFIX, CLICK_KINDS, interaction_paths, save_interactions
from ..io import Geometry, PathLike, check_output_path, strip_image_extension, write_image
from ..quantify import CaseStats, LesionStats, label_lesions, lesion_csv_path, write_csv

#: Ending of the click file that :func:`save_session` writes beside the mask (as ``clicks/<case>_clicks.json``).
CLICKS_SUFFIX = AUTOPET_V_SUFFIX

#: Columns of the widget's lesion table: (header, key of :meth:`LesionStats.row`, format).
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("lesion", "lesion", "d"), ("MTV (ml)", "mtv_ml", ".2f"), ("SUVmax", "suv_max", ".2f"),
    ("SUVmean", "suv_mean", ".2f"), ("SUVpeak", "suv_peak", ".2f"), ("TLG", "tlg", ".2f"),
    ("voxels", "voxels", "d"),
)

#: One click of the widget's ordered history: (kind, (z, y, x) voxel index).
Click = tuple[str, tuple[int, int, int]]


# ------------------------------------------------------------------------------------------------ coordinates
def layer_transform(geometry: Geometry) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """``scale`` and ``translate`` of a napari layer holding a (z, y, x) array on ``geometry``.

    Returns
    -------
    scale : tuple of 3 float
        Voxel size in mm, (z, y, x).
    translate : tuple of 3 float
        World position in mm of the centre of voxel (0, 0, 0), (z, y, x).
    """
    return tuple(geometry.spacing_zyx), tuple(geometry.origin_zyx)  # type: ignore[return-value]


def world_to_voxel(world_zyx: Sequence[float], geometry: Geometry) -> tuple[int, int, int]:
    """The voxel under a napari world position.

    Parameters
    ----------
    world_zyx : 3 floats
        World position in mm, (z, y, x) (the frame of :func:`layer_transform`).
    geometry : Geometry

    Returns
    -------
    tuple of 3 int
        Voxel index in array order (z, y, x), as :meth:`Session.add_click_zyx` takes it.

    Raises
    ------
    ClickError
        The position is not 3 finite numbers, or lies outside the image.
    """
    w = np.asarray(world_zyx, dtype=float).reshape(-1)
    if w.shape != (3,) or not np.all(np.isfinite(w)):
        raise ClickError(f"a world position is 3 finite numbers (z, y, x) in mm, got {list(world_zyx)!r}")
    scale, translate = layer_transform(geometry)
    zyx = np.rint((w - np.asarray(translate)) / np.asarray(scale)).astype(np.int64)
    if np.any(zyx < 0) or np.any(zyx >= np.asarray(geometry.shape)):
        raise ClickError(f"the point at (z, y, x) = ({w[0]:.1f}, {w[1]:.1f}, {w[2]:.1f}) mm lies outside the image "
                         f"(voxel (z, y, x) {zyx.tolist()}, shape {list(geometry.shape)})")
    return tuple(int(v) for v in zyx)  # type: ignore[return-value]


def voxel_to_world(zyx: Sequence[float], geometry: Geometry) -> np.ndarray:
    """World position (z, y, x) in mm of the centre of voxel (z, y, x) (the inverse of :func:`world_to_voxel`).

    Returns
    -------
    np.ndarray, shape (3,), float64
    """
    scale, translate = layer_transform(geometry)
    return np.asarray(translate) + np.asarray(zyx, dtype=float) * np.asarray(scale)


def clicks_world(order: Sequence[Click], kind: str, geometry: Geometry) -> np.ndarray:
    """World positions of the clicks of one kind, in click order.

    Returns
    -------
    np.ndarray, shape (N, 3), float64
        (z, y, x) in mm, the data of that kind's Points layer.
    """
    pts = [voxel_to_world(zyx, geometry) for k, zyx in order if k == kind]
    return np.asarray(pts, dtype=float).reshape(-1, 3)


# ------------------------------------------------------------------------------------------------ strokes
def path_to_stroke(vertices_world: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, int]:
    """The voxels of a path drawn on one slice: each vertex's voxel, joined by digital lines.

    Parameters
    ----------
    vertices_world : np.ndarray, shape (n >= 1, 3)
        The path's vertices in world mm (z, y, x), as a Shapes layer holds a path drawn on the current slice.
    geometry : Geometry

    Returns
    -------
    voxels : np.ndarray, shape (m, 3), int64
        In array order (z, y, x), along the path, each voxel once.
    axis : int
        The array axis normal to the slice (the first axis on which every vertex has the same voxel index).

    Raises
    ------
    ClickError
        No vertex, or vertices on no common slice.
    """
    from skimage.draw import line

    v = np.asarray(vertices_world, dtype=float).reshape(-1, 3)
    if not len(v):
        raise ClickError("a stroke needs at least one vertex")
    vox = np.asarray([world_to_voxel(p, geometry) for p in v], dtype=np.int64)
    flat = [a for a in range(3) if len(np.unique(vox[:, a])) == 1]
    if not flat:
        raise ClickError("a stroke must lie on one slice (draw it on the current slice)")
    axis = flat[0]
    a, b = [k for k in range(3) if k != axis]
    out = [vox[0]]
    for p, q in zip(vox[:-1], vox[1:]):
        ra, rb = line(int(p[a]), int(p[b]), int(q[a]), int(q[b]))
        seg = np.empty((len(ra), 3), dtype=np.int64)
        seg[:, axis], seg[:, a], seg[:, b] = p[axis], ra, rb
        out.extend(seg[1:])
    arr = np.asarray(out, dtype=np.int64)
    _, first = np.unique(arr, axis=0, return_index=True)
    return arr[np.sort(first)], axis


def strokes_world(interactions, label: str, geometry: Geometry) -> list[np.ndarray]:
    """The strokes of one label as paths of voxel centres in world mm (z, y, x), in entry order; a one-voxel
    stroke as a path of that voxel twice (a path needs two vertices)."""
    out = []
    for e in interactions:
        if e.kind == "stroke" and e.label == label:
            pts = np.asarray([voxel_to_world(z, geometry) for z in e.voxels], dtype=float)
            out.append(np.vstack([pts, pts]) if len(pts) == 1 else pts)
    return out


def points_order(interactions) -> list[Click]:
    """The point entries of a session's interactions as the click history (kind, (z, y, x)), oldest first."""
    return [(e.label, tuple(int(v) for v in e.voxels[0])) for e in interactions if e.kind == "point"]


def replay_interactions(session, interactions) -> np.ndarray:
    """Reset the session (undoable) and add the entries of ``interactions`` one by one (points as clicks, strokes
    as strokes), so that undo steps through them again.

    A voxel outside the image raises :class:`ClickError` before the session is changed.
    """
    interactions.check_inside(session.geometry.shape, "the interaction history")
    if len(session.interactions):
        session.reset()
    for e in interactions:
        if e.kind == "point":
            session.add_click_zyx(tuple(int(v) for v in e.voxels[0]), e.label)
        else:
            session.add_stroke(e.voxels, e.label, e.axis)
    return session.mask


# ------------------------------------------------------------------------------------------------ click history
def order_from_clicks(clicks: Clicks) -> list[Click]:
    """A click history from :class:`Clicks`: tumor clicks first, each kind in file order."""
    return [(kind, tuple(int(v) for v in zyx)) for kind, _, zyx, _ in clicks.points()]  # type: ignore[misc]


def clicks_from_order(order: Sequence[Click]) -> Clicks:
    """:class:`Clicks` of a click history."""
    return Clicks([zyx for k, zyx in order if k == "tumor"], [zyx for k, zyx in order if k == "background"])


@dataclass(frozen=True)
class ClickUpdate:
    """What the session must do after a Points layer of one kind changed.

    Attributes
    ----------
    action : {'none', 'add', 'undo', 'replay'}
        ``add``: add ``new`` clicks (in order); ``undo``: undo ``n_undo`` latest clicks; ``replay``: the
        layer changed otherwise (an earlier point deleted or a point moved): reset and replay ``order``.
    order : list of Click
        The click history afterwards.
    new : list of Click
        The clicks to add (``add``).
    n_undo : int
        Number of undos (``undo``).
    """

    action: str
    order: list[Click]
    new: list[Click] = field(default_factory=list)
    n_undo: int = 0


def plan_click_update(order: Sequence[Click], kind: str, layer_zyx: Sequence[Sequence[int]]) -> ClickUpdate:
    """Compare a Points layer with the click history and say how to update the session.

    Parameters
    ----------
    order : sequence of Click
        The session's clicks so far, oldest first: (kind, (z, y, x)).
    kind : {'tumor', 'background'}
        The kind of the layer that changed.
    layer_zyx : sequence of (z, y, x)
        The voxels of that layer's points, in layer order.

    Returns
    -------
    ClickUpdate
        Points appended to the layer are added; deleting the latest clicks (the newest points of the layer,
        when they are also the newest clicks of the session) undoes them; any other change replays the
        history with this kind's clicks replaced by the layer's.
    """
    if kind not in CLICK_KINDS:
        raise ClickError(f"unknown click kind {kind!r} (use one of {', '.join(CLICK_KINDS)})")
    order = [(k, tuple(int(v) for v in zyx)) for k, zyx in order]
    layer = [tuple(int(v) for v in zyx) for zyx in layer_zyx]
    mine = [zyx for k, zyx in order if k == kind]
    if layer == mine:
        return ClickUpdate("none", list(order))
    if len(layer) > len(mine) and layer[:len(mine)] == mine:
        new = [(kind, zyx) for zyx in layer[len(mine):]]
        return ClickUpdate("add", list(order) + new, new=new)
    n = len(mine) - len(layer)
    if n > 0 and mine[:len(layer)] == layer and all(k == kind for k, _ in order[len(order) - n:]):
        return ClickUpdate("undo", list(order[:len(order) - n]), n_undo=n)
    kept = _subsequence(layer, mine)
    replay = []
    if kept is not None:  # points deleted: the others keep their places in the history
        i = 0
        for k, zyx in order:
            if k != kind:
                replay.append((k, zyx))
            else:
                if i in kept:
                    replay.append((k, zyx))
                i += 1
        return ClickUpdate("replay", replay)
    others = iter(layer)  # points moved: the layer's points take this kind's places in order
    for k, zyx in order:
        if k != kind:
            replay.append((k, zyx))
        else:
            nxt = next(others, None)
            if nxt is not None:
                replay.append((kind, nxt))
    replay += [(kind, zyx) for zyx in others]
    return ClickUpdate("replay", replay)


def _subsequence(short: Sequence, long: Sequence) -> set[int] | None:
    """Indices into ``long`` of the items of ``short`` when ``short`` is ``long`` with items removed, else None."""
    kept, j = set(), 0
    for item in short:
        while j < len(long) and long[j] != item:
            j += 1
        if j == len(long):
            return None
        kept.add(j)
        j += 1
    return kept


def apply_click_update(session, update: ClickUpdate) -> np.ndarray:
    """Apply :func:`plan_click_update`'s update to a :class:`~nnunet_quantif.interactive.Session`.

    The session's strokes stay: an undo that would reach past a stroke, or a replay, replays the clicks of the
    update and then the strokes (:func:`replay_interactions`).

    Returns
    -------
    np.ndarray, shape (z, y, x), uint8
        The session's mask afterwards.
    """
    strokes = [e for e in session.interactions if e.kind == "stroke"]
    tail = list(session.interactions)[len(session.interactions) - update.n_undo:] if update.n_undo else []
    if update.action == "add":
        for kind, zyx in update.new:
            session.add_click_zyx(zyx, kind)
    elif update.action == "undo" and all(e.kind == "point" for e in tail):
        for _ in range(update.n_undo):
            session.undo()
    elif update.action in ("undo", "replay"):
        if not strokes:
            replay_clicks(session, update.order)
        else:  # the strokes stay, after the clicks
            from ..interactions import Interactions

            inter = Interactions.empty()
            for kind, zyx in update.order:
                inter = inter.with_point(zyx, kind)
            for e in strokes:
                inter = inter.with_stroke(e.voxels, e.label, e.axis)
            replay_interactions(session, inter)
    return session.mask


def replay_clicks(session, order: Sequence[Click]) -> np.ndarray:
    """Reset the session (undoable) and add the clicks of ``order`` one by one.

    A click outside the image raises :class:`ClickError` before the session is changed.
    """
    for kind, _ in order:
        if kind not in CLICK_KINDS:
            raise ClickError(f"unknown click kind {kind!r} (use one of {', '.join(CLICK_KINDS)})")
    clicks_from_order(order).check_inside(session.geometry.shape, source="the click history")
    if len(session.clicks):
        session.reset()
    for kind, zyx in order:
        session.add_click_zyx(zyx, kind)
    return session.mask


def resume_clicks(session, path: PathLike) -> list[Click]:
    """Replay a click file (the challenge JSON, e.g. one written by :func:`save_session`) on the open case, or
    our interaction file (``<case>_interactions.json``: its points and strokes in order).

    Returns
    -------
    list of Click
        The new click history: tumor clicks first, each kind in file order (the mask depends on the set
        of clicks only).

    Raises
    ------
    ClickError
        Unreadable file or a click outside the image; the message names the file. The session is unchanged.
    """
    from ..clicks import load_click_json
    from ..interactions import FORMAT, read_interactions

    limit = getattr(session.pipeline, "max_clicks", DEFAULT_MAX_CLICKS)
    obj = load_click_json(path, limit)  # size and nesting checked before parsing
    if isinstance(obj, dict) and obj.get("format") == FORMAT:  # our form: points and strokes, in their order
        replay_interactions(session, read_interactions(path, session.geometry.shape))
        return points_order(session.interactions)
    clicks = read_clicks(path, shape=session.geometry.shape, max_clicks=limit)
    order = order_from_clicks(clicks)
    replay_clicks(session, order)
    return order


# ------------------------------------------------------------------------------------------------ lesions
def lesion_label_map(mask: np.ndarray) -> np.ndarray:
    """One label value per lesion: the ids of the lesion table (:func:`~nnunet_quantif.quantify.label_lesions`).

    Parameters
    ----------
    mask : np.ndarray, shape (z, y, x)
        0/1 lesion mask.

    Returns
    -------
    np.ndarray, shape (z, y, x), uint16 (uint32 beyond 65535 lesions)
        0 = background, i = row ``lesion == i`` of the table and the CSV.
    """
    labels, n = label_lesions(mask)
    return labels.astype(np.uint16 if n < np.iinfo(np.uint16).max else np.uint32, copy=False)


def table_rows(stats: CaseStats) -> list[list[str]]:
    """The lesion table's text, one row per lesion in label order, columns :data:`TABLE_COLUMNS`."""
    rows = []
    for lesion in stats.lesions:
        values = lesion.row()
        rows.append([format(values[key], fmt) for _, key, fmt in TABLE_COLUMNS])
    return rows


def lesion_centre_world(lesion: LesionStats, geometry: Geometry) -> np.ndarray:
    """World position (z, y, x) in mm of a lesion's centroid, where the view centres on it.

    Returns
    -------
    np.ndarray, shape (3,), float64
        The centroid's nearest voxel centre (so that the view shows a slice through the lesion).
    """
    zyx = np.rint(Geometry.to_array_order(np.asarray(lesion.centroid_xyz, dtype=float)))
    return voxel_to_world(np.clip(zyx, 0, np.asarray(geometry.shape) - 1), geometry)


# ------------------------------------------------------------------------------------------------ saving
@dataclass(frozen=True)
class SavedFiles:
    """The files of one save: mask, the autoPET V JSON, our interaction JSON and the lesion CSV."""

    mask: Path
    clicks: Path
    lesions: Path
    interactions: Path


def output_paths(mask_path: PathLike) -> SavedFiles:
    """The four output files of :func:`save_session` for a mask path.

    ``<folder>/<case>.nii.gz`` gives ``<folder>/<case>_clicks.json`` (autoPET V JSON),
    ``<folder>/<case>_interactions.json`` (our form) and ``<folder>/<case>_lesions.csv``.
    """
    mask = Path(mask_path)
    challenge, ours = interaction_paths(mask)
    return SavedFiles(mask, challenge, lesion_csv_path(mask), ours)


def save_session(session, mask_path: PathLike, inputs: Sequence[PathLike] = ()) -> SavedFiles:
    """Write the session's mask, its interactions in both JSON forms and its lesion table, each atomically.

    Parameters
    ----------
    session : Session
        A session with an open case.
    mask_path : path-like
        ``.nii.gz``, ``.nii`` or ``.mha``: the 0/1 uint8 mask with the case's geometry (as ``quantif session``'s
        ``save``). Beside it, :func:`output_paths`: the interactions as the autoPET V JSON (every click and
        stroke voxel a point (x, y, z), in the order given; also a valid click file) and in our form (stroke ids
        and order; :func:`~nnunet_quantif.interactive.save_interactions`), and the per-lesion CSV (as
        ``quantif stats``).
    inputs : sequence of path-like
        The case's image files, which are never overwritten, or DICOM series folders, which no output may lie in.

    Returns
    -------
    SavedFiles

    Raises
    ------
    OutputPathError, OverwriteInputError
        Checked for all four files before any is written.
    """
    paths = output_paths(mask_path)
    inputs = tuple(p for p in inputs if p is not None)
    folders = tuple(p for p in inputs if Path(p).is_dir())
    check_output_path(paths.mask, image=True, inputs=inputs, input_folders=folders)
    for p in (paths.clicks, paths.interactions, paths.lesions):
        check_output_path(p, inputs=inputs, input_folders=folders)
    write_image(session.mask, session.geometry, paths.mask, inputs=inputs)
    save_interactions(session.interactions, paths.mask, inputs=inputs)
    write_csv(session.lesions, paths.lesions, inputs=inputs)
    return paths


# ------------------------------------------------------------------------------------------------ models, cases
@dataclass
class ModelSettings:
    """The widget's model fields (those of ``quantif predict``; empty strings mean unset).

    ``folds`` is a space-separated list (``'0 1 2 3 4'`` or ``'all'``); ``device`` ``''`` picks CUDA when
    available.
    """

    model_fdg: str = ""
    model_psma: str = ""
    results: str = ""
    dataset_fdg: str = ""
    dataset_psma: str = ""
    tracer: str = "auto"
    tracer_weights: str = ""
    folds: str = "0 1 2 3 4"
    device: str = ""

    @classmethod
    def from_options(cls, options: PipelineOptions, tracer: str = "auto") -> ModelSettings:
        """The fields from pipeline options (``quantif view``'s command line) and the tracer choice."""
        def text(value) -> str:
            return "" if value is None else str(value)

        folds = options.folds  # None (not given): the model's recorded folds, else every fold found
        return cls(text(options.model_fdg), text(options.model_psma), text(options.results),
                   text(options.dataset_fdg), text(options.dataset_psma), tracer or "auto",
                   text(options.tracer_weights), " ".join(str(f) for f in folds) if folds else "",
                   text(options.device))


def model_options(settings: ModelSettings, base: PipelineOptions | None = None) -> PipelineOptions:
    """The pipeline options of the widget: ``base`` with the widget's model fields filled in.

    Parameters
    ----------
    settings : ModelSettings
    base : PipelineOptions, optional
        Options given on the command line (``quantif view``); the fields override their model options. Default:
        the library's defaults, which are ``quantif predict``'s.

    Raises
    ------
    ConfigError
        No model, or a device the pipeline does not accept.
    """
    def given(value: str) -> str | None:
        return value.strip() or None

    device = settings.device.strip()
    options = replace(base if base is not None else PipelineOptions(),
                      model_fdg=given(settings.model_fdg), model_psma=given(settings.model_psma),
                      results=given(settings.results), dataset_fdg=given(settings.dataset_fdg),
                      dataset_psma=given(settings.dataset_psma), tracer_weights=given(settings.tracer_weights),
                      folds=tuple(settings.folds.split()) or None, device=check_device(device) if device else None)
    if not options.has_model:
        raise ConfigError("no model: give a FDG and/or PSMA model folder, or a results folder with dataset ids")
    return options


def build_pipeline(settings: ModelSettings, base: PipelineOptions | None = None):
    """A :class:`~nnunet_quantif.inference.pipeline.QuantIFPipeline` (not loaded) for the widget's fields,
    built exactly as ``quantif predict`` builds it."""
    from ..model_set import build_pipeline as build

    return build(model_options(settings, base), progress=False)


@contextlib.contextmanager
def case_files(ct: PathLike, pet: PathLike, ignore_ct_mismatch: bool = False) -> Iterator[tuple[Path, Path]]:
    """Image files for a case: NIfTI/MHA files pass through; DICOM series folders are read as ``quantif predict``
    reads them (CT in HU checked against the PET and resampled onto its grid, PET in SUVbw), into a temporary
    folder removed on exit. ``ignore_ct_mismatch`` as ``quantif predict --ignore-ct-mismatch``."""
    from ..dicom import is_dicom_folder, staged_case

    for what, p in (("CT", ct), ("PET", pet)):
        if not str(p).strip():
            raise InputFileError(f"no {what} given")
        if not Path(p).exists():
            raise InputFileError(f"{p}: {what} not found")
    if not (is_dicom_folder(ct) or is_dicom_folder(pet)):
        yield Path(ct), Path(pet)
        return
    with staged_case(ct, pet, ignore_ct_mismatch=ignore_ct_mismatch) as (ct_path, pet_path, _):
        yield ct_path, pet_path


def read_case(ct: PathLike, pet: PathLike, nonfinite: str = "raise", ignore_ct_mismatch: bool = False
              ) -> tuple[np.ndarray, np.ndarray, Geometry, str]:
    """Read a case for the viewer and the session.

    Parameters
    ----------
    ct, pet : path-like
        CT (HU) and PET (SUV) image files on one grid (``.nii.gz``, ``.nii``, ``.mha``), or DICOM series folders.
    nonfinite : str
        NaN/Inf policy of the PET (:func:`~nnunet_quantif.io.read_pet`).
    ignore_ct_mismatch : bool
        Use a DICOM CT that does not match the PET (logged), as ``quantif predict --ignore-ct-mismatch``.

    Returns
    -------
    ct, pet : np.ndarray, shape (z, y, x), float32
    geometry : Geometry
        The PET's grid.
    name : str
        Case name: the PET's file name without its ending (or the folder's name).

    Raises
    ------
    InputFileError, GridMismatchError
        Missing, unreadable or mismatched files; the message names the file.
    """
    from ..inference.pipeline import read_case_images

    with case_files(ct, pet, ignore_ct_mismatch) as (ct_path, pet_path):
        ct_a, pet_a, geometry = read_case_images(ct_path, pet_path, nonfinite)
    name = strip_image_extension(Path(pet).name) if Path(pet).is_file() else Path(pet).name
    return ct_a, pet_a, geometry, name
