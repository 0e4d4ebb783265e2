"""Interactions of one case: an ordered list of points and strokes, each labelled tumor or background.

A **point** is one voxel (an autoPET IV click). A **stroke** is a set of voxels on one slice of the image, in any
plane (axial, coronal or sagittal): a scribble of the autoPET V protocol. An entry labelled ``tumor`` marks lesion
(in autoPET V a stroke drawn on a false negative), ``background`` marks non-lesion (a stroke on a false positive).
The list keeps the order in which the entries were given, and each entry has an integer id, unique in the list.

Coordinates
-----------
As for clicks (:mod:`nnunet_quantif.clicks`), files hold voxel indices in image order (x, y, z) and everything in
memory is in array order (z, y, x). The conversion happens once, in this module's readers and writers, through
:meth:`~nnunet_quantif.io.Geometry.to_array_order` and :meth:`~nnunet_quantif.io.Geometry.to_image_order`.
A stroke's plane is named by the array axis normal to it: ``axial`` = axis 0 (constant z), ``coronal`` = axis 1
(constant y), ``sagittal`` = axis 2 (constant x).

File forms
----------
* **Ours** (``quantif-interactions``, written by :func:`write_interactions`), which keeps ids, kinds, planes and
  the order of the entries::

    {"format": "quantif-interactions", "version": 1,
     "interactions": [{"id": 0, "kind": "stroke", "label": "tumor", "plane": "axial",
                       "voxels": [[x, y, z], ...]},
                      {"id": 1, "kind": "point", "label": "background", "voxels": [[x, y, z]]}]}

* **The challenge form** ``{"version": ..., "type": "Multiple points", "points": [{"point": [x, y, z],
  "name": "tumor" | "background"}, ...]}`` and the simple form ``{"tumor": [[x, y, z], ...], "background":
  [...]}``, as :mod:`nnunet_quantif.clicks` reads them. How their flat points become entries depends on the
  protocol (``protocol`` of :func:`read_interactions`):

  - ``autopet-v``: the autoPET V loop writes each stroke as a run of consecutive points of one name on one
    axial slice (``np.argwhere`` of a one-slice stroke volume, appended to the name's list), and keeps no stroke
    ids. Each maximal run of consecutive points with the same name and the same z (the third coordinate, k)
    becomes one axial stroke, in file order (the simple form: the tumor list's runs, then the background
    list's). Two strokes of one name drawn one after the other on the same slice therefore read as one stroke
    (the file cannot tell them apart). Their loop writes every tumor point before every background point, so
    the order between tumor and background strokes is not in their files either.
  - ``autopet-iv``: every point is a point entry (tumor points first, as :class:`~nnunet_quantif.clicks.Clicks`).

  :func:`write_interactions` with ``form="autopet-v"`` writes the challenge form with every voxel of every entry
  as a point, in entry order; read back with ``protocol="autopet-v"`` it gives the same strokes unless two
  adjacent entries of one label lie on one axial slice, or a point or a non-axial stroke is involved.

Limits
------
A file holds at most ``max_voxels`` voxels (all entries together, :data:`DEFAULT_MAX_VOXELS` unless the caller
allows more); its size and nesting are checked before it is parsed, as for click files
(:func:`~nnunet_quantif.clicks.load_click_json`). Errors are :class:`~nnunet_quantif.errors.InteractionError`
naming the file and the entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .clicks import CLICK_KINDS, Clicks, _brief, _parse_point, load_click_json, max_click_file_bytes
from .errors import ClickError, InteractionError
from .io import Geometry, PathLike, write_json

#: Labels of an entry, as the click files name them.
INTERACTION_LABELS: tuple[str, str] = CLICK_KINDS
#: Kinds of an entry.
INTERACTION_KINDS: tuple[str, str] = ("point", "stroke")
#: Stroke planes, indexed by the array axis (z, y, x) normal to the plane.
PLANES: tuple[str, str, str] = ("axial", "coronal", "sagittal")
#: ``format`` of our JSON form, and its version.
FORMAT = "quantif-interactions"
FORMAT_VERSION = 1
#: How a flat challenge-form file is read (:func:`read_interactions`).
PROTOCOLS: tuple[str, str] = ("autopet-v", "autopet-iv")
#: The file forms :func:`write_interactions` writes.
WRITE_FORMS: tuple[str, str] = ("quantif", "autopet-v")
#: Most voxels (all entries together) an interaction file may hold unless the caller allows more. A whole 2D
#: error component, the simulator's fallback stroke, can take a few thousand.
DEFAULT_MAX_VOXELS = 20_000

_ENTRY_KEYS = frozenset({"id", "kind", "label", "plane", "voxels"})
_TOP_KEYS = frozenset({"format", "version", "interactions"})


def _unique_rows(voxels: np.ndarray) -> np.ndarray:
    """The rows of ``voxels`` (n, 3) without repeats, first occurrences in their order."""
    if len(voxels) < 2:
        return voxels
    _, first = np.unique(voxels, axis=0, return_index=True)
    return voxels[np.sort(first)]


def stroke_axes(voxels: np.ndarray) -> tuple[int, ...]:
    """The array axes (0 = z, 1 = y, 2 = x) along which every voxel of ``voxels`` (n, 3) has one coordinate."""
    v = np.asarray(voxels).reshape(-1, 3)
    return tuple(a for a in range(3) if len(v) and bool(np.all(v[:, a] == v[0, a])))


@dataclass(frozen=True, eq=False)
class Interaction:
    """One entry: a point or a stroke, labelled tumor or background.

    Attributes
    ----------
    kind : {'point', 'stroke'}
    label : {'tumor', 'background'}
    voxels : np.ndarray, shape (n, 3), int64
        Voxel indices in array order (z, y, x), read-only, without repeats (a repeated voxel keeps its first
        place). A point has exactly one.
    axis : int or None
        A stroke's plane as the array axis normal to it (0 axial, 1 coronal, 2 sagittal); every voxel has the
        same index on that axis. None for a point. Given None for a stroke, the first axis (z, y, x order) on
        which the voxels agree is taken.
    id : int
        The entry's id (>= 0), unique in its :class:`Interactions`.

    Raises
    ------
    ValueError
        An unknown kind or label, no voxel, a point with several voxels, a negative index, or a stroke whose
        voxels do not lie on one slice normal to ``axis``.
    """

    kind: str
    label: str
    voxels: np.ndarray
    axis: int | None = None
    id: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INTERACTION_KINDS:
            raise ValueError(f"kind must be one of {', '.join(INTERACTION_KINDS)}, got {self.kind!r}")
        if self.label not in INTERACTION_LABELS:
            raise ValueError(f"label must be one of {', '.join(INTERACTION_LABELS)}, got {self.label!r}")
        if isinstance(self.id, bool) or not isinstance(self.id, int | np.integer) or self.id < 0:
            raise ValueError(f"id must be an integer >= 0, got {self.id!r}")
        v = np.asarray(self.voxels, dtype=np.int64)
        if v.ndim == 1 and v.size == 3:
            v = v.reshape(1, 3)
        if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
            raise ValueError(f"a {self.kind} needs voxels of shape (n >= 1, 3) in (z, y, x) order, got {v.shape}")
        if np.any(v < 0):
            raise ValueError(f"a {self.kind} has a negative voxel index")
        v = _unique_rows(v).copy()
        v.setflags(write=False)
        axis = self.axis
        if self.kind == "point":
            if len(v) != 1:
                raise ValueError(f"a point has one voxel, got {len(v)}")
            if axis is not None:
                raise ValueError("a point has no plane")
        else:
            agree = stroke_axes(v)
            if axis is None:
                if not agree:
                    raise ValueError("a stroke's voxels must lie on one slice (share z, y or x)")
                axis = agree[0]
            elif isinstance(axis, bool) or axis not in (0, 1, 2):
                raise ValueError(f"a stroke's axis must be 0, 1 or 2 (z, y, x), got {axis!r}")
            elif axis not in agree:
                raise ValueError(f"a {PLANES[axis]} stroke's voxels must share one index on axis {axis} "
                                 f"({'zyx'[axis]}), got {len(np.unique(v[:, axis]))} different ones")
            axis = int(axis)
        object.__setattr__(self, "voxels", v)
        object.__setattr__(self, "axis", axis)
        object.__setattr__(self, "id", int(self.id))

    @property
    def plane(self) -> str | None:
        """``axial``, ``coronal`` or ``sagittal`` for a stroke, None for a point."""
        return None if self.axis is None else PLANES[self.axis]

    @property
    def n_voxels(self) -> int:
        """Number of voxels."""
        return int(len(self.voxels))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Interaction):
            return NotImplemented
        return (self.kind, self.label, self.axis, self.id) == (other.kind, other.label, other.axis, other.id) and \
            bool(np.array_equal(self.voxels, other.voxels))

    __hash__ = None  # type: ignore[assignment]

    def voxels_xyz(self) -> list[list[int]]:
        """The voxels in image order (x, y, z), as plain lists (as in the files)."""
        return Geometry.to_image_order(self.voxels).tolist()

    def to_json_dict(self) -> dict:
        """The entry in our JSON form."""
        out: dict = {"id": self.id, "kind": self.kind, "label": self.label}
        if self.plane is not None:
            out["plane"] = self.plane
        out["voxels"] = self.voxels_xyz()
        return out


@dataclass(frozen=True, eq=False)
class Interactions:
    """The ordered interactions of one case.

    Attributes
    ----------
    entries : tuple of Interaction
        In the order they were given; ids unique.
    source : str or None
        Where they came from (a file path), for messages; not part of equality.

    Immutable: :meth:`with_point`, :meth:`with_stroke` and :meth:`without` return new lists.
    """

    entries: tuple[Interaction, ...] = ()
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        entries = tuple(self.entries)
        for e in entries:
            if not isinstance(e, Interaction):
                raise TypeError(f"entries must be Interaction objects, got {type(e).__name__}")
        ids = [e.id for e in entries]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"interaction ids must be unique, repeated: {dup}")
        object.__setattr__(self, "entries", entries)

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, source: str | None = None) -> Interactions:
        """No interactions (round 0)."""
        return cls((), source)

    @classmethod
    def from_clicks(cls, clicks: Clicks) -> Interactions:
        """Every click as a point entry: tumor clicks first, each kind in file order, ids 0, 1, ..."""
        entries = [Interaction("point", kind, zyx, id=k) for k, (kind, _, zyx, _) in enumerate(clicks.points())]
        return cls(tuple(entries), clicks.source)

    @property
    def next_id(self) -> int:
        """The id the next added entry gets: one more than the largest, 0 for an empty list."""
        return max((e.id for e in self.entries), default=-1) + 1

    def with_point(self, zyx: Sequence[int], label: str) -> Interactions:
        """A new list with a point at voxel ``zyx`` (array order) appended."""
        return Interactions((*self.entries, Interaction("point", label, zyx, id=self.next_id)), self.source)

    def with_stroke(self, voxels_zyx: np.ndarray | Sequence[Sequence[int]], label: str,
                    axis: int | None = None) -> Interactions:
        """A new list with a stroke of ``voxels_zyx`` (n, 3) (array order) on the slice normal to ``axis``
        appended (None: the first axis the voxels agree on)."""
        entry = Interaction("stroke", label, np.asarray(voxels_zyx), axis, id=self.next_id)
        return Interactions((*self.entries, entry), self.source)

    def without(self, entry_id: int) -> Interactions:
        """A new list without the entry ``entry_id`` (a whole stroke); KeyError when there is none."""
        kept = tuple(e for e in self.entries if e.id != entry_id)
        if len(kept) == len(self.entries):
            raise KeyError(f"no interaction with id {entry_id}")
        return Interactions(kept, self.source)

    def first(self, n: int) -> Interactions:
        """The first ``n`` entries (``n`` >= 0; more than there are keeps all)."""
        if int(n) < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return Interactions(self.entries[:int(n)], self.source)

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Interaction]:
        return iter(self.entries)

    def __getitem__(self, i: int) -> Interaction:
        return self.entries[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Interactions):
            return NotImplemented
        return self.entries == other.entries

    __hash__ = None  # type: ignore[assignment]

    @property
    def n_voxels(self) -> int:
        """Voxels of all entries together (a voxel in several entries counts in each)."""
        return sum(e.n_voxels for e in self.entries)

    def voxels(self, label: str) -> np.ndarray:
        """Every voxel of the entries labelled ``label``, (n, 3) int64 in array order, each voxel once, in the
        order the entries give them."""
        if label not in INTERACTION_LABELS:
            raise ValueError(f"label must be one of {', '.join(INTERACTION_LABELS)}, got {label!r}")
        parts = [e.voxels for e in self.entries if e.label == label]
        return _unique_rows(np.concatenate(parts)) if parts else np.zeros((0, 3), np.int64)

    def groups(self, label: str) -> list[np.ndarray]:
        """The voxels of each entry labelled ``label``, in order, each voxel in the first entry that has it
        (so the groups are disjoint and together are :meth:`voxels`)."""
        seen: set[tuple[int, int, int]] = set()
        out = []
        for e in self.entries:
            if e.label != label:
                continue
            keep = [i for i, v in enumerate(map(tuple, e.voxels.tolist())) if not (v in seen or seen.add(v))]
            if keep:
                out.append(e.voxels[keep])
        return out

    def to_clicks(self) -> Clicks:
        """Every voxel as a click (:meth:`voxels` of each label), for click-only encodings and methods."""
        return Clicks(self.voxels("tumor"), self.voxels("background"), self.source)

    def check_inside(self, shape_zyx: Sequence[int], source: str | None = None) -> None:
        """Raise :class:`InteractionError` unless every voxel lies inside an array of shape ``shape_zyx``.

        The message names the source, the entry (index, id, kind, label) and the voxel in (x, y, z).
        """
        shape = np.asarray([int(s) for s in shape_zyx])
        if shape.shape != (3,):
            raise ValueError(f"shape must be 3-D (z, y, x), got {tuple(shape_zyx)}")
        src = source or self.source or "<interactions>"
        for i, e in enumerate(self.entries):
            outside = np.flatnonzero(np.any(e.voxels >= shape, axis=1))
            if outside.size:
                v = Geometry.to_image_order(e.voxels[outside[0]]).tolist()
                raise InteractionError(f"{src}: entry #{i} (id {e.id}, {e.label} {e.kind}) voxel {v} (x, y, z) lies "
                                       f"outside the image of size {Geometry.to_image_order(shape).tolist()} "
                                       f"(x, y, z)")

    # ------------------------------------------------------------------ JSON
    def to_json_dict(self) -> dict:
        """Our JSON form (voxels in (x, y, z))."""
        return {"format": FORMAT, "version": FORMAT_VERSION,
                "interactions": [e.to_json_dict() for e in self.entries]}

    def to_autopet_v_dict(self) -> dict:
        """The challenge form: every voxel of every entry as a point, in entry order (module docstring)."""
        points = [{"point": p, "name": e.label} for e in self.entries for p in e.voxels_xyz()]
        return {"version": {"major": 1, "minor": 0}, "type": "Multiple points", "points": points}


# ----------------------------------------------------------------------------------------------- reading


def _check_voxel_count(n: int, src: str, max_voxels: int | None) -> None:
    if max_voxels is not None and n > max_voxels:
        raise InteractionError(f"{src}: {n} voxels, more than the limit of {max_voxels} voxels for an interaction "
                               f"file")


def _runs(points: list[tuple[str, list[int]]]) -> list[tuple[str, list[list[int]]]]:
    """Maximal runs of consecutive (name, xyz) points with the same name and the same z (xyz[2])."""
    runs: list[tuple[str, list[list[int]]]] = []
    for name, xyz in points:
        if runs and runs[-1][0] == name and runs[-1][1][-1][2] == xyz[2]:
            runs[-1][1].append(xyz)
        else:
            runs.append((name, [xyz]))
    return runs


def _flat_points(obj: Mapping, src: str, max_voxels: int | None) -> list[tuple[str, list[int]]]:
    """The (name, xyz) points of a challenge- or simple-form object, in file order (simple form: tumor first)."""
    if "points" in obj and ("tumor" in obj or "background" in obj):
        raise InteractionError(f"{src}: both 'points' (challenge form) and 'tumor'/'background' (simple form) keys; "
                               f"keep one form")
    out: list[tuple[str, list[int]]] = []
    if "points" in obj:
        points = obj["points"]
        if not isinstance(points, list):
            raise InteractionError(f"{src}: 'points' must be a list, got {type(points).__name__}")
        _check_voxel_count(len(points), src, max_voxels)
        for i, p in enumerate(points):
            where = f"point #{i}"
            if not isinstance(p, Mapping) or "point" not in p or "name" not in p:
                raise InteractionError(f"{src}: {where}: expected an object with 'point' and 'name', got {_brief(p)}")
            if p["name"] not in INTERACTION_LABELS:
                raise InteractionError(f"{src}: {where}: unknown point name {_brief(p['name'])} "
                                       f"(expected 'tumor' or 'background')")
            out.append((p["name"], _parse_point(p["point"], src, f"{where} ({p['name']})")))
        return out
    unknown = sorted(set(obj) - set(INTERACTION_LABELS))
    if unknown:
        raise InteractionError(f"{src}: unknown key(s) {_brief(unknown)}: expected our form ('format': '{FORMAT}'), "
                               f"the challenge form ('points') or the simple form ('tumor', 'background')")
    lists = {k: obj.get(k) or [] for k in INTERACTION_LABELS}
    for k, v in lists.items():
        if not isinstance(v, list):
            raise InteractionError(f"{src}: '{k}' must be a list of [x, y, z], got {type(v).__name__}")
    _check_voxel_count(sum(len(v) for v in lists.values()), src, max_voxels)
    for k, v in lists.items():
        out += [(k, _parse_point(p, src, f"{k} point #{i}")) for i, p in enumerate(v)]
    return out


def _parse_ours(obj: Mapping, src: str, max_voxels: int | None) -> Interactions:
    if obj.get("version") != FORMAT_VERSION:
        raise InteractionError(f"{src}: {FORMAT} version {_brief(obj.get('version'))} is not supported "
                               f"({FORMAT_VERSION})")
    unknown = sorted(set(obj) - _TOP_KEYS)
    if unknown:
        raise InteractionError(f"{src}: unknown key(s) {_brief(unknown)} in a {FORMAT} file")
    raw = obj.get("interactions")
    if not isinstance(raw, list):
        raise InteractionError(f"{src}: 'interactions' must be a list, got {type(raw).__name__}")
    total = sum(len(e["voxels"]) for e in raw if isinstance(e, Mapping) and isinstance(e.get("voxels"), list))
    _check_voxel_count(total, src, max_voxels)
    entries = []
    for i, e in enumerate(raw):
        where = f"entry #{i}"
        if not isinstance(e, Mapping):
            raise InteractionError(f"{src}: {where}: expected an object, got {_brief(e)}")
        unknown = sorted(set(e) - _ENTRY_KEYS)
        missing = sorted({"id", "kind", "label", "voxels"} - set(e))
        if unknown or missing:
            raise InteractionError(f"{src}: {where}: " + "; ".join(
                ([f"unknown key(s) {_brief(unknown)}"] if unknown else []) +
                ([f"missing key(s) {', '.join(missing)}"] if missing else [])))
        ident, kind, label, plane = e["id"], e["kind"], e["label"], e.get("plane")
        if isinstance(ident, bool) or not isinstance(ident, int) or ident < 0:
            raise InteractionError(f"{src}: {where}: id must be an integer >= 0, got {_brief(ident)}")
        where = f"{where} (id {ident})"
        if kind not in INTERACTION_KINDS or label not in INTERACTION_LABELS:
            raise InteractionError(f"{src}: {where}: kind {_brief(kind)} / label {_brief(label)} must be one of "
                                   f"{', '.join(INTERACTION_KINDS)} / {', '.join(INTERACTION_LABELS)}")
        if (kind == "stroke") != (plane is not None) or (plane is not None and plane not in PLANES):
            raise InteractionError(f"{src}: {where}: a stroke has a plane ({', '.join(PLANES)}) and a point none, "
                                   f"got {kind} with plane {_brief(plane)}")
        if not isinstance(e["voxels"], list):
            raise InteractionError(f"{src}: {where}: voxels must be a list of [x, y, z], got {_brief(e['voxels'])}")
        xyz = [_parse_point(p, src, f"{where} voxel #{k}") for k, p in enumerate(e["voxels"])]
        try:
            entries.append(Interaction(kind, label, Geometry.to_array_order(np.asarray(xyz, np.int64).reshape(-1, 3)),
                                       None if plane is None else PLANES.index(plane), ident))
        except ValueError as err:
            raise InteractionError(f"{src}: {where}: {err}") from None
    try:
        return Interactions(tuple(entries), src)
    except ValueError as err:
        raise InteractionError(f"{src}: {err}") from None


def parse_interactions(obj: object, source: str = "<interactions>", shape: Sequence[int] | None = None, *,
                       protocol: str = "autopet-v", max_voxels: int | None = DEFAULT_MAX_VOXELS) -> Interactions:
    """Parse an already-loaded JSON object in any interaction form (module docstring).

    Parameters
    ----------
    obj : object
        The parsed JSON; None (an empty file) means no interactions.
    source : str
        The file, for messages.
    shape : sequence of 3 int, optional
        Array shape (z, y, x) of the image; a voxel outside it is an error.
    protocol : {'autopet-v', 'autopet-iv'}
        How flat challenge-form points become entries (strokes by runs, or points). Our form ignores it.
    max_voxels : int or None
        Most voxels allowed, all entries together (None: no limit).

    Returns
    -------
    Interactions
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    try:
        return _parse(obj, source, shape, protocol, max_voxels)
    except InteractionError:
        raise
    except ClickError as err:  # a coordinate refused by the click parser
        raise InteractionError(str(err)) from None


def _parse(obj: object, src: str, shape: Sequence[int] | None, protocol: str,
           max_voxels: int | None) -> Interactions:
    if obj is None:
        return Interactions.empty(src)
    if not isinstance(obj, Mapping):
        raise InteractionError(f"{src}: expected a JSON object, got {type(obj).__name__}")
    if "format" in obj:
        if obj["format"] != FORMAT:
            raise InteractionError(f"{src}: unknown format {_brief(obj['format'])} (expected '{FORMAT}')")
        out = _parse_ours(obj, src, max_voxels)
    else:
        points = _flat_points(obj, src, max_voxels)
        if protocol == "autopet-iv":
            points = [p for p in points if p[0] == "tumor"] + [p for p in points if p[0] == "background"]
            groups = [(name, [xyz]) for name, xyz in points]
        else:
            groups = _runs(points)
        kind = "point" if protocol == "autopet-iv" else "stroke"
        out = Interactions(tuple(Interaction(kind, name, Geometry.to_array_order(np.asarray(xyz, np.int64)),
                                             0 if kind == "stroke" else None, k)
                                 for k, (name, xyz) in enumerate(groups)), src)
    if shape is not None:
        out.check_inside(shape, src)
    return out


def read_interactions(path: PathLike, shape: Sequence[int] | None = None, *, protocol: str = "autopet-v",
                      max_voxels: int | None = DEFAULT_MAX_VOXELS) -> Interactions:
    """Read an interaction file (our form, the challenge form or the simple form) into array order (z, y, x).

    Parameters and returns as :func:`parse_interactions`. The file's size (``max_voxels`` bounds it as
    ``max_clicks`` bounds a click file) and nesting are checked before it is parsed; an empty file means no
    interactions.

    Raises
    ------
    InteractionError
        Missing, unreadable, too large or malformed file, more voxels than ``max_voxels``, a bad entry (unknown
        kind, label or plane, repeated id, a stroke off one slice, a point with several voxels) or a voxel
        outside the image; the message names the file and the entry.
    """
    p = Path(path)
    src = str(p)
    limit = max_click_file_bytes(max_voxels)
    if limit is not None and p.is_file() and p.stat().st_size > limit:
        raise InteractionError(f"{src}: interaction file of {p.stat().st_size} bytes, larger than the {limit} bytes "
                               f"allowed for {max_voxels} voxels")
    try:
        obj = load_click_json(p, max_voxels)
    except ClickError as err:
        raise InteractionError(str(err).replace("click file", "interaction file").replace(" clicks", " voxels")
                               .replace(" (raise the limit with --max-clicks)", "")) from None
    return parse_interactions(obj, src, shape, protocol=protocol, max_voxels=max_voxels)


def write_interactions(interactions: Interactions, path: PathLike, inputs: Iterable[PathLike] = (), *,
                       form: str = "quantif") -> Path:
    """Write interactions atomically, in our form (``quantif``, lossless) or the challenge form (``autopet-v``).

    Parameters
    ----------
    interactions : Interactions
    path : path-like
        Target JSON file.
    inputs : iterable of path-like
        Paths that must not be overwritten.
    form : {'quantif', 'autopet-v'}
    """
    if form not in WRITE_FORMS:
        raise ValueError(f"form must be one of {', '.join(WRITE_FORMS)}, got {form!r}")
    data = interactions.to_json_dict() if form == "quantif" else interactions.to_autopet_v_dict()
    return write_json(data, path, inputs)


def as_interactions(value: Interactions | Clicks) -> Interactions:
    """``value`` itself, or clicks as point entries (:meth:`Interactions.from_clicks`)."""
    if isinstance(value, Interactions):
        return value
    if isinstance(value, Clicks):
        return Interactions.from_clicks(value)
    raise TypeError(f"expected Interactions or Clicks, got {type(value).__name__}")
