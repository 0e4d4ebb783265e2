"""Click records: reading, writing, validating and simulating autoPET IV clicks.

Coordinates
-----------
Click files store voxel **indices in image order (x, y, z)** (ITK/NIfTI index
order, not millimetres). Everything inside nnunet-quantif works in **array
order (z, y, x)**, the order of a SimpleITK numpy array. This module is the
one place where the conversion happens: :func:`read_clicks` turns a JSON point
``[x, y, z]`` into the row ``(z, y, x)`` of :attr:`Clicks.tumor` /
:attr:`Clicks.background`, and :func:`write_clicks` turns it back. A click
``[x, y, z]`` therefore addresses ``arr[z, y, x]``. Callers that need image order use
:meth:`Clicks.points`, :meth:`Clicks.tumor_xyz` and :meth:`Clicks.background_xyz`; moving clicks to
another grid is :meth:`Clicks.mapped` (the point <-> index mapping itself is :class:`~nnunet_quantif.io.Geometry`'s).

Interactive steps
-----------------
:func:`clicks_at_step` is the one way to get "the click file of a case at step k, or none": no file
gives empty clicks, a file is read (and validated against the image shape) and cut to step k.

File forms
----------
Two JSON forms are read:

* the challenge form
  ``{"version": {"major": 1, "minor": 0}, "type": "Multiple points",
  "points": [{"point": [x, y, z], "name": "tumor" | "background"}, ...]}``;
* the simple form ``{"tumor": [[x, y, z], ...], "background": [[x, y, z], ...]}``
  (either list may be missing, which means no click of that kind).

An empty file, or an empty ``points`` list, is valid: it is interactive step 0
(no clicks). :func:`write_clicks` writes the challenge form, tumor clicks first.

Simulation
----------
:func:`simulate_clicks` reproduces the autoPET IV click simulation described in
the challenge protocol (26-connected components, a first click at the maximum
of each component's Euclidean distance transform, then "boundary" clicks;
background clicks from hot non-lesion components above the 99.75th SUV
percentile).
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .components import label_components
from .errors import ClickError, GridMismatchError, InvalidSUVError
from .io import Geometry, PathLike, write_json

#: Point names accepted in the challenge form, in the order :func:`write_clicks` writes them.
CLICK_KINDS: tuple[str, str] = ("tumor", "background")

#: Number of clicks of each kind in the autoPET IV protocol.
DEFAULT_N_CLICKS = 10

#: Percentile of the non-lesion PET above which background candidates are taken (autoPET IV).
BACKGROUND_PERCENTILE = 99.75

#: Most clicks (tumor and background together) a click file may hold unless the caller allows more
#: (``--max-clicks``); the autoPET IV protocol uses at most :data:`DEFAULT_N_CLICKS` of each kind.
DEFAULT_MAX_CLICKS = 1000

#: Deepest nesting of arrays and objects in a click file (the challenge form nests 4 deep).
MAX_JSON_DEPTH = 16

#: Largest click file, in bytes: this allowance plus :data:`FILE_BYTES_PER_CLICK` per allowed click.
FILE_BYTES_BASE = 64 * 1024
#: Bytes a click file may spend per allowed click (a pretty-printed challenge-form point takes about 100).
FILE_BYTES_PER_CLICK = 1024


def _as_click_array(values: object, what: str) -> np.ndarray:
    arr = np.asarray(values if values is not None else np.zeros((0, 3)), dtype=np.int64)
    if arr.size == 0:
        arr = arr.reshape(0, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{what} clicks must have shape (N, 3) in (z, y, x) order, got {arr.shape}")
    arr = arr.copy()
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Clicks:
    """Tumor and background clicks of one case, in array order (z, y, x).

    Attributes
    ----------
    tumor : np.ndarray, shape (N, 3), int64
        Tumor (lesion) clicks as voxel indices (z, y, x), in file order.
    background : np.ndarray, shape (M, 3), int64
        Background clicks as voxel indices (z, y, x), in file order.
    source : str or None
        Where the clicks came from (a file path), used in error messages.
        Not part of equality.

    The arrays are read-only. Two ``Clicks`` are equal when both arrays are equal.
    """

    tumor: np.ndarray
    background: np.ndarray
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tumor", _as_click_array(self.tumor, "tumor"))
        object.__setattr__(self, "background", _as_click_array(self.background, "background"))

    @classmethod
    def empty(cls, source: str | None = None) -> Clicks:
        """No clicks at all (interactive step 0)."""
        return cls(np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64), source)

    @classmethod
    def from_xyz(cls, tumor: Iterable[Sequence[int]] = (), background: Iterable[Sequence[int]] = (),
                 source: str | None = None) -> Clicks:
        """Build from clicks given in image order (x, y, z), as in the JSON files."""
        t = np.asarray(list(tumor), dtype=np.int64).reshape(-1, 3)[:, ::-1]
        b = np.asarray(list(background), dtype=np.int64).reshape(-1, 3)[:, ::-1]
        return cls(t, b, source)

    @property
    def n_tumor(self) -> int:
        """Number of tumor clicks."""
        return int(self.tumor.shape[0])

    @property
    def n_background(self) -> int:
        """Number of background clicks."""
        return int(self.background.shape[0])

    def __len__(self) -> int:
        return self.n_tumor + self.n_background

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Clicks):
            return NotImplemented
        return bool(np.array_equal(self.tumor, other.tumor) and np.array_equal(self.background, other.background))

    __hash__ = None  # type: ignore[assignment]

    def first(self, k: int) -> Clicks:
        """The clicks of interactive step ``k``: the first ``k`` tumor and the first ``k`` background clicks.

        ``k`` larger than the number of clicks keeps them all; ``k = 0`` gives no clicks.
        """
        k = int(k)
        if k < 0:
            raise ValueError(f"step k must be >= 0, got {k}")
        return Clicks(self.tumor[:k], self.background[:k], self.source)

    def tumor_xyz(self) -> list[list[int]]:
        """Tumor clicks in image order (x, y, z), as plain lists."""
        return self.tumor[:, ::-1].tolist()

    def background_xyz(self) -> list[list[int]]:
        """Background clicks in image order (x, y, z), as plain lists."""
        return self.background[:, ::-1].tolist()

    def points(self) -> Iterator[tuple[str, int, np.ndarray, list[int]]]:
        """Every click as ``(kind, i, zyx, xyz)``: tumor clicks first, each kind in file order.

        ``zyx`` is the array-order row (it indexes ``arr[tuple(zyx)]``), ``xyz`` the image-order index as a
        plain list (as in the JSON files and for :meth:`~nnunet_quantif.io.Geometry.index_to_physical`).
        """
        for kind, arr in (("tumor", self.tumor), ("background", self.background)):
            for i, zyx in enumerate(arr):
                yield kind, i, zyx, zyx[::-1].tolist()

    def mapped(self, src: Geometry, dst: Geometry) -> Clicks:
        """The clicks, given on grid ``src``, moved to the nearest voxel of grid ``dst`` through physical space
        (clipped into ``dst``)."""

        def conv(arr: np.ndarray) -> np.ndarray:
            if len(arr) == 0:
                return arr
            return np.asarray([dst.nearest_index(src.index_to_physical(zyx[::-1]))[::-1] for zyx in arr],
                              dtype=np.int64).reshape(-1, 3)

        return Clicks(conv(self.tumor), conv(self.background), self.source)

    def to_json_dict(self) -> dict:
        """The challenge JSON form (points in (x, y, z)), tumor clicks first."""
        points = [{"point": p, "name": "tumor"} for p in self.tumor_xyz()]
        points += [{"point": p, "name": "background"} for p in self.background_xyz()]
        return {"version": {"major": 1, "minor": 0}, "type": "Multiple points", "points": points}

    def check_inside(self, shape_zyx: Sequence[int], source: str | None = None) -> None:
        """Raise :class:`ClickError` unless every click lies inside an array of shape ``shape_zyx``.

        The message names the source, the kind and index of the click, and its (x, y, z) value.
        """
        shape = tuple(int(s) for s in shape_zyx)
        if len(shape) != 3:
            raise ValueError(f"shape must be 3-D (z, y, x), got {shape}")
        src = source or self.source or "<clicks>"
        for kind, arr in (("tumor", self.tumor), ("background", self.background)):
            for i, c in enumerate(arr):
                if np.any(c < 0) or np.any(c >= np.asarray(shape)):
                    raise ClickError(
                        f"{src}: {kind} click #{i} {c[::-1].tolist()} (x, y, z) lies outside the image of "
                        f"size {list(shape[::-1])} (x, y, z)"
                    )


# ----------------------------------------------------------------------------------------------- reading


#: Largest voxel index a click may have (ITK image sizes are far below it; larger values overflow int64).
_MAX_INDEX = 2 ** 31 - 1

_BRIEF = reprlib.Repr()
_BRIEF.maxlist = _BRIEF.maxtuple = 6
_BRIEF.maxdict = 4
_BRIEF.maxlevel = 3
_BRIEF.maxstring = _BRIEF.maxother = 60
_BRIEF.maxlong = 40


def _brief(value: object) -> str:
    """A short repr of a value from a click file, for messages (long lists, strings and numbers elided)."""
    return _BRIEF.repr(value)


def max_click_file_bytes(max_clicks: int | None = DEFAULT_MAX_CLICKS) -> int | None:
    """The largest click file, in bytes, read under a limit of ``max_clicks`` clicks (None: no limit)."""
    return None if max_clicks is None else FILE_BYTES_BASE + FILE_BYTES_PER_CLICK * int(max_clicks)


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON text ``data`` (UTF-8), without parsing it.

    Brackets inside strings do not count. Linear in the length of ``data``; for text that is not valid JSON the
    value is exact up to the first error, which is as far as a JSON parser gets.
    """
    b = np.frombuffer(data, dtype=np.uint8)
    if b.size == 0:
        return 0
    idx = np.arange(b.size)
    # a quote is escaped when an odd number of backslashes precedes it
    last_other = np.maximum.accumulate(np.where(b != ord("\\"), idx, -1))
    quotes = np.flatnonzero(b == ord('"'))
    preceding = quotes - 1 - np.where(quotes > 0, last_other[np.maximum(quotes - 1, 0)], -1)
    toggles = np.zeros(b.size, dtype=np.int8)
    toggles[quotes[preceding % 2 == 0]] = 1
    outside = (np.cumsum(toggles) % 2 == 0) & (toggles == 0)
    step = (((b == ord("[")) | (b == ord("{"))).astype(np.int64) - ((b == ord("]")) | (b == ord("}")))) * outside
    return int(max(np.cumsum(step).max(), 0))


def _check_count(n: int, src: str, max_clicks: int | None) -> None:
    if max_clicks is not None and n > max_clicks:
        raise ClickError(f"{src}: {n} clicks, more than the limit of {max_clicks} (the autoPET IV protocol uses "
                         f"at most {DEFAULT_N_CLICKS} + {DEFAULT_N_CLICKS}; raise the limit with --max-clicks)")


def load_click_json(path: PathLike, max_clicks: int | None = DEFAULT_MAX_CLICKS) -> object:
    """The JSON content of a click file, with its size and nesting checked before it is parsed.

    Parameters
    ----------
    path : path-like
    max_clicks : int or None
        Clicks allowed; the file may hold :func:`max_click_file_bytes` bytes. None: no size limit.

    Returns
    -------
    The parsed JSON (None for an empty or whitespace-only file).

    Raises
    ------
    ClickError
        Missing, unreadable, too large, nested deeper than :data:`MAX_JSON_DEPTH`, or malformed.
    """
    p = Path(path)
    src = str(p)
    limit = max_click_file_bytes(max_clicks)
    try:
        if not p.is_file():
            raise ClickError(f"{src}: click file not found" if not p.exists() else f"{src}: not a file")
        size = p.stat().st_size
        if limit is not None and size > limit:
            raise ClickError(f"{src}: click file of {size} bytes, larger than the {limit} bytes allowed for "
                             f"{max_clicks} clicks (raise the limit with --max-clicks)")
        with p.open("rb") as f:
            data = f.read(limit + 1 if limit is not None else -1)
        if limit is not None and len(data) > limit:  # the file grew since stat
            raise ClickError(f"{src}: click file larger than the {limit} bytes allowed for {max_clicks} clicks")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ClickError(f"{src}: cannot read click file ({e})") from None
    if not text.strip():
        return None
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise ClickError(f"{src}: JSON nested {depth} deep; a click file nests at most {MAX_JSON_DEPTH} deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ClickError(f"{src}: malformed JSON ({e})") from None
    except RecursionError:  # not reached after the depth check; kept so no traceback can escape
        raise ClickError(f"{src}: JSON nested too deep") from None


def _parse_coordinate(value: object, src: str, where: str) -> int:
    if isinstance(value, bool):
        raise ClickError(f"{src}: {where}: coordinate {value!r} is a boolean, expected an integer voxel index")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise ClickError(f"{src}: {where}: coordinate {value!r} is not an integer voxel index")
    raise ClickError(f"{src}: {where}: coordinate {_brief(value)} is not a number (expected an integer voxel index)")


def _parse_point(value: object, src: str, where: str) -> list[int]:
    if not isinstance(value, list | tuple):
        raise ClickError(f"{src}: {where}: expected a list [x, y, z], got {_brief(value)}")
    if len(value) != 3:
        raise ClickError(f"{src}: {where}: expected 3 coordinates [x, y, z], got {len(value)}: {_brief(value)}")
    xyz = [_parse_coordinate(v, src, f"{where} {_brief(list(value))}") for v in value]
    if min(xyz) < 0:
        raise ClickError(f"{src}: {where}: {xyz} (x, y, z) has a negative voxel index")
    if max(xyz) > _MAX_INDEX:
        raise ClickError(f"{src}: {where}: {_brief(list(value))} (x, y, z) has a voxel index above {_MAX_INDEX}, "
                         "outside any image")
    return xyz


def parse_clicks(obj: object, source: str = "<clicks>", shape: Sequence[int] | None = None, *,
                 max_clicks: int | None = DEFAULT_MAX_CLICKS) -> Clicks:
    """Parse an already-loaded JSON object in either click form.

    Parameters
    ----------
    obj : dict
        The JSON content (challenge form or simple form; see the module docstring).
    source : str
        Name of the origin (a file path), used in error messages.
    shape : sequence of 3 int, optional
        Array shape (z, y, x) of the image; every click must lie inside it.
    max_clicks : int or None
        Most clicks allowed (tumor and background together), checked before any point is parsed;
        None: no limit.

    Returns
    -------
    Clicks
        In array order (z, y, x).
    """
    src = str(source)
    tumor: list[list[int]] = []
    background: list[list[int]] = []
    if not isinstance(obj, dict):
        raise ClickError(f"{src}: expected a JSON object with 'points' or 'tumor'/'background', "
                         f"got {type(obj).__name__}")
    if "points" in obj and ("tumor" in obj or "background" in obj):
        raise ClickError(f"{src}: ambiguous click file: it has both 'points' (challenge form) and "
                         f"'tumor'/'background' (simple form) keys; keep one form")
    if "points" in obj:
        points = obj["points"]
        if not isinstance(points, list):
            raise ClickError(f"{src}: 'points' must be a list, got {type(points).__name__}")
        _check_count(len(points), src, max_clicks)
        for i, p in enumerate(points):
            where = f"point #{i}"
            if not isinstance(p, dict):
                raise ClickError(f"{src}: {where}: expected an object with 'point' and 'name', got {_brief(p)}")
            for key in ("point", "name"):
                if key not in p:
                    raise ClickError(f"{src}: {where} {_brief(p)}: missing key '{key}'")
            name = p["name"]
            if name not in CLICK_KINDS:
                raise ClickError(f"{src}: {where} {_brief(p['point'])}: unknown point name {_brief(name)} "
                                 f"(expected 'tumor' or 'background')")
            xyz = _parse_point(p["point"], src, f"{where} ({name})")
            (tumor if name == "tumor" else background).append(xyz)
    elif "tumor" in obj or "background" in obj:
        _check_count(sum(len(v) for v in (obj.get(k) for k in CLICK_KINDS) if isinstance(v, list)), src,
                     max_clicks)
        for kind in CLICK_KINDS:
            items = obj.get(kind, [])
            if items is None:
                items = []
            if not isinstance(items, list):
                raise ClickError(f"{src}: '{kind}' must be a list of [x, y, z], got {type(items).__name__}")
            for i, v in enumerate(items):
                (tumor if kind == "tumor" else background).append(_parse_point(v, src, f"{kind} click #{i}"))
        unknown = sorted(set(obj) - set(CLICK_KINDS))
        if unknown:
            raise ClickError(f"{src}: unknown key(s) {_brief(unknown)} in the simple click form "
                             f"(expected 'tumor' and 'background')")
    else:
        raise ClickError(f"{src}: missing key 'points' (challenge form) or 'tumor'/'background' (simple form); "
                         f"found keys {_brief(sorted(obj))}")
    clicks = Clicks.from_xyz(tumor, background, source=src)
    if shape is not None:
        clicks.check_inside(shape, src)
    return clicks


def read_clicks(path: PathLike, shape: Sequence[int] | None = None, *,
                max_clicks: int | None = DEFAULT_MAX_CLICKS) -> Clicks:
    """Read a click file (either JSON form) into array order (z, y, x).

    Parameters
    ----------
    path : path-like
        The JSON file. An empty (or whitespace-only) file means no clicks.
    shape : sequence of 3 int, optional
        Array shape (z, y, x) of the image the clicks belong to; a click
        outside it raises :class:`ClickError`.
    max_clicks : int or None
        Most clicks allowed (tumor and background together, default :data:`DEFAULT_MAX_CLICKS`); it also
        bounds the file size (:func:`max_click_file_bytes`). None: no limit.

    Returns
    -------
    Clicks

    Raises
    ------
    ClickError
        Missing or unreadable file, a path that is not a file, a file too large or nested too deep (checked
        before parsing), malformed JSON, more clicks than ``max_clicks``, missing keys, an unknown point
        name, a non-integer coordinate, a point without 3 coordinates, or a click outside the image. The
        message names the file and the click, and is cut to a few hundred characters.
    """
    src = str(Path(path))
    obj = load_click_json(path, max_clicks)
    if obj is None:
        return Clicks.empty(source=src)
    return parse_clicks(obj, src, shape, max_clicks=max_clicks)


def clicks_at_step(path: PathLike | None, step: int | None = None, *, shape: Sequence[int] | None = None,
                   missing_ok: bool = False, max_clicks: int | None = DEFAULT_MAX_CLICKS) -> Clicks:
    """The click file of a case at interactive step ``k``, or none.

    Parameters
    ----------
    path : path-like or None
        The click file (either JSON form). None means no clicks (empty :class:`Clicks`).
    step : int, optional
        Interactive step k: keep the first k tumor and first k background clicks (:meth:`Clicks.first`;
        ``step=0`` gives none, a negative step raises ``ValueError``). None keeps all clicks.
    shape : sequence of 3 int, optional
        Array shape (z, y, x) of the image; a click outside it raises :class:`ClickError`.
    missing_ok : bool
        A path that does not exist means no clicks, instead of a :class:`ClickError`. A path that exists but
        is not a file (a folder) is an error either way.
    max_clicks : int or None
        See :func:`read_clicks`.

    Returns
    -------
    Clicks
        In array order (z, y, x); empty Clicks carry no source.
    """
    if path is None or (missing_ok and not Path(path).exists()):
        clicks = Clicks.empty()
    else:
        clicks = read_clicks(path, shape=shape, max_clicks=max_clicks)
    return clicks if step is None else clicks.first(step)


def write_clicks(clicks: Clicks, path: PathLike, inputs: Iterable[PathLike] = ()) -> Path:
    """Write clicks in the challenge JSON form (points in (x, y, z)), atomically.

    Parameters
    ----------
    clicks : Clicks
    path : path-like
        Target JSON file.
    inputs : iterable of path-like
        Paths that must not be overwritten.
    """
    return write_json(clicks.to_json_dict(), path, inputs)


# -------------------------------------------------------------------------------------------- simulation


def _padded_box(box: Sequence[slice], shape: Sequence[int]) -> tuple[slice, ...]:
    """``box`` grown by one voxel on each side, clipped to ``shape``.

    The ring around a component's bounding box holds no voxel of the component, so the Euclidean
    distance transform of the component mask on this crop equals the full-volume one.
    """
    return tuple(slice(max(s.start - 1, 0), min(s.stop + 1, int(n))) for s, n in zip(box, shape))


class _Component:
    """One connected component: its crop (offset), mask and distance transform, computed lazily."""

    def __init__(self, cc: np.ndarray, label: int, box: Sequence[slice]) -> None:
        from scipy.ndimage import distance_transform_edt

        crop = _padded_box(box, cc.shape)
        self.offset = np.array([s.start for s in crop], dtype=np.int64)
        self.mask = cc[crop] == label
        self.edt = distance_transform_edt(self.mask)

    def centre(self) -> np.ndarray:
        """The first voxel (C order of the crop) where the distance transform is maximal."""
        return np.array(np.unravel_index(int(np.argmax(self.edt)), self.edt.shape)) + self.offset

    def min_edt_voxels(self) -> np.ndarray:
        """Voxels whose distance-transform value is the smallest positive one, (K, 3) in C order."""
        inverted = (self.edt.max() - self.edt) * (self.edt > 0)
        return np.argwhere((inverted == inverted.max()) & self.mask) + self.offset

    def all_voxels(self) -> np.ndarray:
        """Every voxel of the component, (K, 3) in C order."""
        return np.argwhere(self.mask) + self.offset


def _centre_then_boundary(mask_xyz: np.ndarray, n: int, rng: np.random.RandomState,
                          boundary: str) -> list[list[int]]:
    """The autoPET IV scheme on one binary mask (in (x, y, z) index order): centre clicks, then boundary clicks."""
    from scipy.ndimage import find_objects

    cc = label_components(mask_xyz, 26)
    n_comp = int(cc.max()) if cc.size else 0
    if n_comp == 0 or n <= 0:
        return []
    labels = np.arange(1, n_comp + 1)
    sampled = rng.choice(labels, size=min(n, n_comp), replace=False)
    boxes = find_objects(cc, max_label=int(sampled.max()))  # boxes[k - 1] is component k's bounding box
    comps = {int(k): _Component(cc, int(k), boxes[int(k) - 1]) for k in sampled}
    clicks = [comps[int(k)].centre().tolist() for k in sampled]
    while len(clicks) < n:
        for k in sampled:
            comp = comps[int(k)]
            candidates = comp.min_edt_voxels() if boundary == "min_edt" else comp.all_voxels()
            clicks.append(candidates[rng.choice(candidates.shape[0])].tolist())
            if len(clicks) == n:
                break
    return clicks


def background_threshold(label: np.ndarray, pet: np.ndarray, percentile: float = BACKGROUND_PERCENTILE) -> float:
    """The SUV threshold for background candidates: the ``percentile`` of PET over voxels with label == 0."""
    values = np.asarray(pet)[np.asarray(label) == 0].astype(np.float64)
    if values.size == 0:
        return float("inf")
    return float(np.percentile(values, percentile, overwrite_input=True))


def simulate_clicks(label: np.ndarray, pet: np.ndarray, n: int = DEFAULT_N_CLICKS, seed: int = 42,
                    source: str | None = None) -> Clicks:
    """Simulate tumor and background clicks with the autoPET IV algorithm.

    * **Tumor:** the 26-connected components of ``label > 0``; ``min(n, ncomp)`` of them are drawn at
      random without replacement, and each gets a click at the maximum of its Euclidean distance
      transform (the deepest voxel). While fewer than ``n`` clicks exist, the drawn components are
      cycled through in the same order, each adding a "boundary" click: a random voxel whose
      distance-transform value is the smallest positive one.
    * **Background:** th = the 99.75th percentile of PET over ``label == 0``; the 26-connected
      components of ``(pet > th) & (label == 0)`` get the same centre-then-boundary scheme, where a
      boundary click is a random voxel of the component.
    * A lesion-free label gets background clicks only. Fewer than ``n`` clicks of a kind come back
      only when there is no component of that kind.

    The random stream follows the organisers' script: ``numpy.random.RandomState(seed)`` with one
    ``choice`` of components per kind (tumor first) and one ``choice`` per boundary click, and
    components, ties of the maximum and candidate lists are ordered as in their (x, y, z) arrays.
    One deliberate difference: for background boundary clicks on a component whose distance transform
    is constant, their script draws from every voxel *outside* the component (anywhere in the image,
    lesions included); here the draw is always from the component's own voxels, as the protocol says.
    Distance transforms are computed per component on its bounding box (plus a one-voxel ring), which
    gives the same values as a full-volume transform.

    Parameters
    ----------
    label : np.ndarray, shape (z, y, x)
        Lesion mask (> 0 is lesion).
    pet : np.ndarray, shape (z, y, x)
        PET in SUV, same grid.
    n : int
        Clicks of each kind (10 in autoPET IV).
    seed : int
        Random seed (42 in autoPET IV). The result is deterministic for a seed.
    source : str, optional
        Name of the PET for error messages.

    Returns
    -------
    Clicks
        In array order (z, y, x), tumor clicks inside lesions, background clicks outside.
    """
    label = np.asarray(label)
    pet = np.asarray(pet)
    if label.ndim != 3 or label.shape != pet.shape:
        raise GridMismatchError(f"{source or 'simulate_clicks'}: label shape {label.shape} and PET shape "
                                f"{pet.shape} must be equal 3-D (z, y, x) shapes")
    if np.issubdtype(pet.dtype, np.floating):
        n_bad = int(pet.size - np.count_nonzero(np.isfinite(pet)))
        if n_bad:
            raise InvalidSUVError(f"{source or '<PET array>'}: PET holds {n_bad} non-finite voxel(s) (NaN/Inf)")
    rng = np.random.RandomState(seed)
    # Work on (x, y, z) views (Fortran-ordered, the same memory) so that component numbering, ties and
    # candidate order match the organisers' script, which ran on nibabel (x, y, z) arrays.
    lesion_xyz = (label > 0).T
    tumor = _centre_then_boundary(lesion_xyz, n, rng, "min_edt") if lesion_xyz.any() else []
    th = background_threshold(label, pet)
    hot_xyz = np.asfortranarray((pet > th).T & ~lesion_xyz)
    background = _centre_then_boundary(hot_xyz, n, rng, "component")
    return Clicks.from_xyz(tumor, background, source=source)
