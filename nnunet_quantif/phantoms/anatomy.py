"""Phantom anatomy: a whole-body digital phantom defined in physical millimetres.

Coordinates
-----------
Arrays are (z, y, x). The grid has an identity direction (ITK/LPS), so
``+x`` = patient left, ``+y`` = posterior, ``+z`` = superior; z index 0 is at
the feet and the head is at high z. Physical positions are in mm with the grid
centred on (0, 0, 0). Body landmarks are written as ``d`` = distance in mm below
the vertex (top of the head) of an average body, mapped to ``z`` by
:meth:`Body.z`.

Every object is rasterised on the bounding-box sub-grid of the object only
(vectorised masks, no per-voxel loops), so the same body can be sampled on any
grid (``small``, ``medium``, ``full``) in little time.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..config import load_json_config
from ..errors import ConfigError
from ..io import Geometry

#: Vertebra names from top to bottom (TotalSegmentator spelling).
VERTEBRAE: tuple[str, ...] = (
    tuple(f"vertebrae_C{i}" for i in range(1, 8))
    + tuple(f"vertebrae_T{i}" for i in range(1, 13))
    + tuple(f"vertebrae_L{i}" for i in range(1, 6))
    + ("vertebrae_S1",)
)

#: Internal organ names; the index is the internal organ id (0 = air outside the body).
ORGAN_LIST: tuple[str, ...] = (
    "air", "soft_tissue", "subcutaneous_fat", "brain", "skull",
    "parotid_gland_left", "parotid_gland_right", "submandibular_gland_left", "submandibular_gland_right",
    "trachea", "lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
    "lung_middle_lobe_right", "lung_lower_lobe_right", "heart", "heart_cavity", "aorta", "liver", "spleen",
    "stomach", "pancreas", "kidney_left", "kidney_right", "small_bowel", "colon", "urinary_bladder", "prostate",
    "sternum", "sacrum", "hip_left", "hip_right", "femur_left", "femur_right",
) + VERTEBRAE + tuple(f"rib_left_{i}" for i in range(1, 13)) + tuple(f"rib_right_{i}" for i in range(1, 13))

#: Internal organ name -> internal id.
ORGAN_IDS: dict[str, int] = {name: i for i, name in enumerate(ORGAN_LIST)}

#: Internal organs that are bone (lesion sites of type "bone").
BONE_ORGANS: tuple[str, ...] = tuple(n for n in ORGAN_LIST if n.startswith(("vertebrae_", "rib_", "hip_", "femur_"))
                                     or n in ("sacrum", "sternum", "skull"))


@lru_cache(maxsize=1)
def phantom_config() -> dict:
    """The shipped ``configs/phantoms.json`` (cached; do not mutate)."""
    cfg = load_json_config("phantoms.json")
    if not isinstance(cfg, dict) or not {"grids", "suv", "hu", "organs", "lesions"} <= set(cfg):
        raise ConfigError("phantoms.json: missing one of the sections grids, suv, hu, organs, lesions")
    return cfg


def organ_tissue(name: str) -> tuple[str, str]:
    """(hu tissue, suv group) of an internal organ, from the ``organs`` section of the config."""
    for pattern, value in phantom_config()["organs"].items():
        if not pattern.startswith("_") and fnmatch.fnmatchcase(name, pattern):
            return value[0], value[1]
    raise ConfigError(f"phantoms.json: no 'organs' entry matches the organ {name!r}")


def make_geometry(size: str) -> Geometry:
    """Geometry of a phantom grid: identity direction, centred on the physical origin.

    Parameters
    ----------
    size : {'small', 'medium', 'full'}
    """
    grids = phantom_config()["grids"]
    if size not in grids or size.startswith("_"):
        names = ", ".join(k for k in grids if not k.startswith("_"))
        raise ConfigError(f"phantoms.json: unknown phantom size {size!r} (expected one of {names})")
    shape = np.asarray(grids[size]["shape_zyx"], dtype=int)
    spacing = np.asarray(grids[size]["spacing_zyx"], dtype=float)
    origin_zyx = -(shape - 1) / 2.0 * spacing
    return Geometry.from_shape(shape, spacing, origin=tuple(Geometry.to_image_order(origin_zyx)))


class Grid:
    """Voxel-centre coordinates of a geometry with identity direction, in mm, array order (z, y, x)."""

    def __init__(self, geometry: Geometry) -> None:
        if not np.allclose(geometry.direction_matrix, np.eye(3)):
            raise ValueError("phantom grids must have an identity direction")
        self.geometry = geometry
        self.shape = geometry.shape
        self.spacing = np.asarray(geometry.spacing_zyx, dtype=float)
        self.origin = np.asarray(geometry.origin_zyx, dtype=float)

    def axis(self, dim: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Physical coordinates (mm) of voxel centres along array axis ``dim`` (0 = z, 1 = y, 2 = x)."""
        hi = self.shape[dim] if hi is None else hi
        return (self.origin[dim] + self.spacing[dim] * np.arange(lo, hi)).astype(np.float32)

    def bbox(self, lo_xyz: np.ndarray, hi_xyz: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Array slices (z, y, x) covering the physical box [lo, hi] (x, y, z in mm); None if outside."""
        lo = (Geometry.to_array_order(np.asarray(lo_xyz, float)) - self.origin) / self.spacing
        hi = (Geometry.to_array_order(np.asarray(hi_xyz, float)) - self.origin) / self.spacing
        i0 = np.maximum(np.floor(lo).astype(int), 0)
        i1 = np.minimum(np.ceil(hi).astype(int) + 1, self.shape)
        if np.any(i1 <= i0):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(i0, i1))  # type: ignore[return-value]

    def coords(self, sl: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable physical coordinates (z (n,1,1), y (1,n,1), x (1,1,n)) of a box."""
        z = self.axis(0, sl[0].start, sl[0].stop)[:, None, None]
        y = self.axis(1, sl[1].start, sl[1].stop)[None, :, None]
        x = self.axis(2, sl[2].start, sl[2].stop)[None, None, :]
        return z, y, x

    def to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Nearest voxel index (z, y, x) of a physical point (x, y, z), clipped to the grid."""
        idx = np.rint((Geometry.to_array_order(np.asarray(xyz, float)) - self.origin) / self.spacing).astype(int)
        return np.clip(idx, 0, np.asarray(self.shape) - 1)

    def to_physical(self, zyx: np.ndarray) -> np.ndarray:
        """Physical point (x, y, z) of a voxel index (z, y, x)."""
        return Geometry.to_image_order(self.origin + self.spacing * np.asarray(zyx, float))


# --------------------------------------------------------------------------- primitives
Mask = tuple[tuple[slice, slice, slice], np.ndarray]


def ellipsoid(grid: Grid, centre: np.ndarray, semi: np.ndarray, rot: np.ndarray | None = None) -> Mask | None:
    """Ellipsoid mask on its bounding box.

    Parameters
    ----------
    centre, semi : (3,) x, y, z in mm (semi-axes of the unrotated ellipsoid)
    rot : (3, 3) rotation applied to the ellipsoid's axes (x, y, z), optional

    Returns
    -------
    (slices, mask) with mask a boolean array over the box, or None when the box is outside the grid.
    """
    centre = np.asarray(centre, float)
    semi = np.asarray(semi, float)
    r = semi if rot is None else np.full(3, semi.max())
    sl = grid.bbox(centre - r, centre + r)
    if sl is None:
        return None
    z, y, x = grid.coords(sl)
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    if rot is not None:
        # coordinates in the ellipsoid frame: R^T (p - c)
        rt = np.asarray(rot, float).T
        dx, dy, dz = (rt[0, 0] * dx + rt[0, 1] * dy + rt[0, 2] * dz,
                      rt[1, 0] * dx + rt[1, 1] * dy + rt[1, 2] * dz,
                      rt[2, 0] * dx + rt[2, 1] * dy + rt[2, 2] * dz)
    q = (dx / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dz / semi[2]) ** 2
    return sl, q <= 1.0


def capsule(grid: Grid, p0: np.ndarray, p1: np.ndarray, radius: float) -> Mask | None:
    """Mask of the points within ``radius`` mm of the segment p0-p1 (x, y, z in mm)."""
    p0 = np.asarray(p0, float)
    p1 = np.asarray(p1, float)
    sl = grid.bbox(np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius)
    if sl is None:
        return None
    z, y, x = grid.coords(sl)
    d = p1 - p0
    dd = float(d @ d) or 1e-9
    t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / dd
    t = np.clip(t, 0.0, 1.0)
    q = (x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2
    return sl, q <= radius * radius


def elliptic_cylinder(grid: Grid, centre: np.ndarray, semi_xy: tuple[float, float], height: float) -> Mask | None:
    """Vertical elliptic cylinder (axis along z) centred at ``centre`` (x, y, z mm)."""
    c = np.asarray(centre, float)
    half = np.array([semi_xy[0], semi_xy[1], height / 2.0])
    sl = grid.bbox(c - half, c + half)
    if sl is None:
        return None
    z, y, x = grid.coords(sl)
    q = ((x - c[0]) / semi_xy[0]) ** 2 + ((y - c[1]) / semi_xy[1]) ** 2
    return sl, (q <= 1.0) & (np.abs(z - c[2]) <= half[2])


def rot_x(deg: float) -> np.ndarray:
    """Rotation matrix about the x axis."""
    a = np.deg2rad(deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def rot_z(deg: float) -> np.ndarray:
    """Rotation matrix about the z axis."""
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


# --------------------------------------------------------------------------- body
#: Torso/neck outline: d below vertex (mm), semi-axis x, semi-axis y, centre y (mm) of the cross-section ellipse.
_TRUNK_PROFILE = np.array([
    [185, 48, 52, 8], [265, 58, 58, 14], [280, 140, 92, 10], [300, 182, 105, 5], [400, 165, 115, 0],
    [500, 155, 112, 0], [620, 145, 105, -5], [700, 160, 110, 0], [800, 178, 115, 5], [860, 175, 110, 5],
    [885, 150, 95, 5],
], dtype=float)


@dataclass
class Body:
    """Per-case body parameters (scales, vertex) and helpers mapping landmarks to mm."""

    sx: float
    sy: float
    sz: float
    vertex_z: float
    rng: np.random.Generator
    jitter_mm: float
    organ_scale: tuple[float, float]

    def z(self, d: float) -> float:
        """Physical z (mm) of a landmark ``d`` mm below the vertex of the average body."""
        return self.vertex_z - d * self.sz

    def p(self, x: float, y: float, d: float, jitter: bool = False) -> np.ndarray:
        """Physical point (x, y, z) of an average-body landmark, scaled (and jittered if asked)."""
        pt = np.array([x * self.sx, y * self.sy, self.z(d)])
        if jitter:
            pt = pt + self.rng.normal(0.0, self.jitter_mm, 3)
        return pt

    def s(self, ax: float, ay: float, az: float, vary: bool = True) -> np.ndarray:
        """Semi-axes (x, y, z) in mm, scaled by the body and (if ``vary``) by a random organ factor."""
        f = self.rng.uniform(*self.organ_scale, 3) if vary else np.ones(3)
        return np.array([ax * self.sx, ay * self.sy, az * self.sz]) * f


@dataclass
class Anatomy:
    """A rasterised phantom body.

    Attributes
    ----------
    organs : np.ndarray, uint8, (z, y, x)
        Internal organ ids (see :data:`ORGAN_LIST`; 0 = air outside the body).
    body : np.ndarray, bool, (z, y, x)
        Inside the body outline.
    grid : Grid
    node_sites : dict[str, np.ndarray]
        Lymph-node-like lesion sites: name -> physical centre (x, y, z) mm.
    params : dict
        Body scales and other per-case parameters (JSON-friendly).
    """

    organs: np.ndarray
    body: np.ndarray
    grid: Grid
    node_sites: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict = field(default_factory=dict)


def _paint(organs: np.ndarray, m: Mask | None, name: str, where: Callable[[np.ndarray], np.ndarray] | None = None
           ) -> None:
    """Set ``organs`` to the id of ``name`` inside mask ``m`` (optionally only where ``where(sub)`` holds)."""
    if m is None:
        return
    sl, mask = m
    sub = organs[sl]
    if where is not None:
        mask = mask & where(sub)
    sub[mask] = ORGAN_IDS[name]


def _body_outline(grid: Grid, b: Body) -> np.ndarray:
    """Boolean body mask (head, neck, trunk, thighs) and the subcutaneous-fat-free interior."""
    zc = grid.axis(0)
    yc = grid.axis(1)[None, :, None]
    xc = grid.axis(2)[None, None, :]
    d = (b.vertex_z - zc) / b.sz                      # depth below vertex per slice (average-body mm)
    prof = _TRUNK_PROFILE
    inside = (d >= prof[0, 0]) & (d <= prof[-1, 0])
    ax = np.where(inside, np.interp(d, prof[:, 0], prof[:, 1]) * b.sx, 0.0)[:, None, None]
    ay = np.where(inside, np.interp(d, prof[:, 0], prof[:, 2]) * b.sy, 0.0)[:, None, None]
    cy = (np.interp(d, prof[:, 0], prof[:, 3]) * b.sy)[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        body = ((xc / ax) ** 2 + ((yc - cy) / ay) ** 2) <= 1.0
    body &= (ax > 0)
    # thighs: two tapering ellipses below the crotch
    leg = (d >= 855)
    if leg.any():
        t = np.clip((d - 870) / 300.0, 0, 1)
        lax = np.where(leg, (80 - 15 * t) * b.sx, 0.0)[:, None, None]
        lay = np.where(leg, (88 - 15 * t) * b.sy, 0.0)[:, None, None]
        lcx = ((88 - 5 * t) * b.sx)[:, None, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            for side in (-1, 1):
                body |= (((xc - side * lcx) / lax) ** 2 + ((yc - 8 * b.sy) / lay) ** 2 <= 1.0) & (lax > 0)
    # head and jaw
    for m in (ellipsoid(grid, b.p(0, -5, 112), b.s(76, 98, 112, vary=False)),
              ellipsoid(grid, b.p(0, -22, 188), b.s(56, 62, 42, vary=False))):
        if m is not None:
            body[m[0]] |= m[1]
    return body


def _subcutaneous_fat(grid: Grid, b: Body, organs: np.ndarray, body: np.ndarray, thickness: float) -> None:
    """Mark a fat layer of ``thickness`` mm under the trunk and thigh skin (x-y distance, slice-wise ellipses)."""
    zc = grid.axis(0)
    yc = grid.axis(1)[None, :, None]
    xc = grid.axis(2)[None, None, :]
    d = (b.vertex_z - zc) / b.sz
    prof = _TRUNK_PROFILE
    inside = (d >= 290) & (d <= prof[-1, 0])
    ax = np.where(inside, np.interp(d, prof[:, 0], prof[:, 1]) * b.sx - thickness, 0.0)[:, None, None]
    ay = np.where(inside, np.interp(d, prof[:, 0], prof[:, 2]) * b.sy - thickness, 0.0)[:, None, None]
    cy = (np.interp(d, prof[:, 0], prof[:, 3]) * b.sy)[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        core = (((xc / ax) ** 2 + ((yc - cy) / ay) ** 2) <= 1.0) & (ax > 0)
    leg = d >= 880
    if leg.any():
        t = np.clip((d - 870) / 300.0, 0, 1)
        lax = np.where(leg, (80 - 15 * t) * b.sx - thickness, 0.0)[:, None, None]
        lay = np.where(leg, (88 - 15 * t) * b.sy - thickness, 0.0)[:, None, None]
        lcx = ((88 - 5 * t) * b.sx)[:, None, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            for side in (-1, 1):
                core |= (((xc - side * lcx) / lax) ** 2 + ((yc - 8 * b.sy) / lay) ** 2 <= 1.0) & (lax > 0)
    region = body & ~core
    region[d < 290] = False
    organs[region] = ORGAN_IDS["subcutaneous_fat"]


def _spine_y(d: float) -> float:
    """Average-body y (mm) of the vertebral-body centre at depth d below the vertex."""
    return float(np.interp(d, [150, 270, 330, 420, 540, 620, 700, 760], [5, 18, 45, 60, 55, 40, 45, 60]))


def _lung_lobes(grid: Grid, b: Body, organs: np.ndarray, side: str) -> None:
    s = 1 if side == "left" else -1
    centre = b.p(s * 80, 10, 435 if side == "left" else 430, jitter=True)
    semi = b.s(62, 82, 132)
    m = ellipsoid(grid, centre, semi)
    if m is None:
        return
    sl, mask = m
    z, y, _ = grid.coords(sl)
    # oblique fissure: higher posteriorly; horizontal fissure (right) splits the anterior upper part
    zf = centre[2] + 0.7 * (y - centre[1]) - 0.1 * semi[2]
    upper = z > zf
    sub = organs[sl]
    if side == "left":
        sub[mask & upper] = ORGAN_IDS["lung_upper_lobe_left"]
        sub[mask & ~upper] = ORGAN_IDS["lung_lower_lobe_left"]
    else:
        middle = upper & (z < centre[2] + 0.05 * semi[2]) & (y < centre[1] + 0.2 * semi[1])
        sub[mask & upper & ~middle] = ORGAN_IDS["lung_upper_lobe_right"]
        sub[mask & middle] = ORGAN_IDS["lung_middle_lobe_right"]
        sub[mask & ~upper] = ORGAN_IDS["lung_lower_lobe_right"]


def _ribs(grid: Grid, b: Body, organs: np.ndarray, vert_d: dict[str, float]) -> None:
    """Twelve ribs per side: elliptical bands that descend anteriorly from their thoracic vertebra."""
    for k in range(1, 13):
        d0 = vert_d[f"vertebrae_T{k}"]
        a = float(np.interp(k, [1, 3, 7, 12], [72, 122, 148, 138])) * b.sx
        bb = float(np.interp(k, [1, 4, 8, 12], [58, 92, 102, 96])) * b.sy
        yc = 0.0 + (_spine_y(d0) * b.sy + 30 * b.sy - bb)   # posterior arc passes just behind the vertebra
        drop = float(np.interp(k, [1, 6, 12], [35, 70, 45])) * b.sz
        phi_max = float(np.interp(k, [1, 7, 10, 12], [0.9, 0.85, 0.65, 0.45])) * np.pi
        z0 = b.z(d0)
        thick = 5.0
        for side, name in ((1, f"rib_left_{k}"), (-1, f"rib_right_{k}")):
            lo = np.array([min(0, side * (a + 10)), yc - bb - 10, z0 - drop - 12])
            hi = np.array([max(0, side * (a + 10)), yc + bb + 10, z0 + 12])
            sl = grid.bbox(lo, hi)
            if sl is None:
                continue
            z, y, x = grid.coords(sl)
            xn = x / a
            yn = (y - yc) / bb
            rho = np.sqrt(xn ** 2 + yn ** 2)
            phi = np.arccos(np.clip(yn / np.maximum(rho, 1e-6), -1, 1))   # 0 = posterior, pi = anterior
            zr = z0 - drop * (1 - np.cos(phi)) / 2
            band = (np.abs(rho - 1) * (a + bb) / 2 <= thick) & (np.abs(z - zr) <= thick) & (side * x > 8)
            band &= (phi >= 0.12 * np.pi) & (phi <= phi_max)
            organs[sl][band] = ORGAN_IDS[name]


def build_anatomy(rng: np.random.Generator, geometry: Geometry) -> Anatomy:
    """Draw a body and rasterise it on ``geometry``.

    Parameters
    ----------
    rng : numpy Generator (consumed in a fixed order, so a seed gives one body on every grid)
    geometry : Geometry with identity direction

    Returns
    -------
    Anatomy
    """
    cfg = phantom_config()["body"]
    grid = Grid(geometry)
    b = Body(sx=rng.uniform(*cfg["scale_x"]), sy=rng.uniform(*cfg["scale_y"]), sz=rng.uniform(*cfg["scale_z"]),
             vertex_z=float(cfg["vertex_z_mm"]), rng=rng, jitter_mm=float(cfg["organ_jitter_mm"]),
             organ_scale=tuple(cfg["organ_scale"]))
    organs = np.zeros(grid.shape, dtype=np.uint8)
    body = _body_outline(grid, b)
    organs[body] = ORGAN_IDS["soft_tissue"]
    _subcutaneous_fat(grid, b, organs, body, thickness=float(rng.uniform(10, 25)))

    # --- head
    _paint(organs, ellipsoid(grid, b.p(0, -5, 110), b.s(70, 91, 105, vary=False)), "skull")
    _paint(organs, ellipsoid(grid, b.p(0, -2, 95), b.s(64, 84, 70, vary=False)), "brain")
    # skull only above the skull base; below it the ellipsoid shell would cut through the face
    zb = b.z(150)
    organs[:grid.to_index([0, 0, zb])[0]][organs[:grid.to_index([0, 0, zb])[0]] == ORGAN_IDS["skull"]] = \
        ORGAN_IDS["soft_tissue"]
    glands = {}
    for side, sname in ((1, "left"), (-1, "right")):
        c = b.p(side * 50, 5, 168, jitter=True)
        s = b.s(13, 21, 24)
        _paint(organs, ellipsoid(grid, c, s), f"parotid_gland_{sname}")
        glands[f"parotid_{sname}"] = (c, s)
        c = b.p(side * 35, -42, 208, jitter=True)
        s = b.s(11, 14, 11)
        _paint(organs, ellipsoid(grid, c, s), f"submandibular_gland_{sname}")
        glands[f"submandibular_{sname}"] = (c, s)

    # --- spine (needed by ribs), painted last so bone wins
    spans = [(150, 270, 7), (270, 540, 12), (540, 700, 5), (700, 728, 1)]
    vert_d: dict[str, float] = {}
    vert_h: dict[str, float] = {}
    names = iter(VERTEBRAE)
    for d0, d1, n in spans:
        h = (d1 - d0) / n
        for i in range(n):
            name = next(names)
            vert_d[name] = d0 + (i + 0.5) * h
            vert_h[name] = h

    # --- thorax
    _paint(organs, capsule(grid, b.p(0, -5, 195), b.p(0, 15, 385), 9.0), "trachea")
    _lung_lobes(grid, b, organs, "left")
    _lung_lobes(grid, b, organs, "right")
    hc = b.p(22, -28, 445, jitter=True)
    hs = b.s(62, 52, 60)
    _paint(organs, ellipsoid(grid, hc, hs), "heart")
    _paint(organs, ellipsoid(grid, hc + np.array([-3, 3, 3]), hs - 13), "heart_cavity")
    aorta_pts = [b.p(8, -18, 445), b.p(10, -10, 345), b.p(20, 25, 330), b.p(20, 50, 360), b.p(15, 45, 560),
                 b.p(5, 25, 735)]
    for p0, p1, r in zip(aorta_pts[:-1], aorta_pts[1:], (13, 12, 11, 11, 10)):
        _paint(organs, capsule(grid, p0, p1, r * b.sx), "aorta")

    # --- abdomen (bowel first; solid organs overwrite it)
    bowel_c = b.p(0, -32, 725, jitter=True)
    _paint(organs, ellipsoid(grid, bowel_c, b.s(95, 52, 62)), "small_bowel")
    colon = [b.p(-112, -5, 800), b.p(-112, -25, 655), b.p(0, -62, 665), b.p(112, -25, 650), b.p(108, -5, 790),
             b.p(40, 10, 805)]
    for p0, p1 in zip(colon[:-1], colon[1:]):
        _paint(organs, capsule(grid, p0, p1, 20 * b.sx), "colon")
    liver_c = b.p(-62, 0, 568, jitter=True)
    _paint(organs, ellipsoid(grid, liver_c, b.s(98, 88, 78)), "liver")
    _paint(organs, ellipsoid(grid, liver_c + np.array([70 * b.sx, -40 * b.sy, 15]), b.s(52, 38, 38)), "liver")
    _paint(organs, ellipsoid(grid, b.p(102, 45, 565, jitter=True), b.s(34, 45, 55)), "spleen")
    _paint(organs, ellipsoid(grid, b.p(58, -38, 572, jitter=True), b.s(48, 36, 52)), "stomach")
    _paint(organs, capsule(grid, b.p(-25, 18, 612, jitter=True), b.p(85, 35, 592, jitter=True), 13 * b.sx),
           "pancreas")
    kidneys = {}
    for side, sname, dk in ((1, "left", 628), (-1, "right", 648)):
        c = b.p(side * 76, 62, dk, jitter=True)
        s = b.s(28, 30, 55)
        _paint(organs, ellipsoid(grid, c, s, rot=rot_z(side * 15)), f"kidney_{sname}")
        kidneys[sname] = (c, s)

    # --- pelvis
    fill = float(rng.uniform(*cfg["bladder_fill"]))
    bl_c = b.p(0, -48, 818, jitter=True)
    bl_s = b.s(42, 38, 34) * fill ** (1 / 3)
    _paint(organs, ellipsoid(grid, bl_c, bl_s), "urinary_bladder")
    pr_c = b.p(0, -28, 866, jitter=True)
    _paint(organs, ellipsoid(grid, pr_c, b.s(18, 15, 16)), "prostate")

    # --- skeleton
    for name in VERTEBRAE:
        d = vert_d[name]
        h = vert_h[name]
        w = float(np.interp(d, [150, 300, 540, 700], [16, 20, 25, 26]))
        dep = float(np.interp(d, [150, 300, 540, 700], [13, 16, 20, 20]))
        c = b.p(0, _spine_y(d), d)
        _paint(organs, elliptic_cylinder(grid, c, (w * b.sx, dep * b.sy), (h - 3) * b.sz), name)
        back = c + np.array([0, (dep + 10) * b.sy, 0])
        _paint(organs, capsule(grid, back, back + np.array([0, 22 * b.sy, -6 * b.sz]), 5.0), name)
        _paint(organs, capsule(grid, back - np.array([w * 1.3 * b.sx, 0, 0]), back + np.array([w * 1.3 * b.sx, 0, 0]),
                               4.5), name)
    _paint(organs, ellipsoid(grid, b.p(0, 72, 770), b.s(46, 18, 52, vary=False), rot=rot_x(-30)), "sacrum")
    _paint(organs, capsule(grid, b.p(0, -100, 305), b.p(0, -108, 465), 11.0 * b.sx),
           "sternum", where=lambda sub: sub != 0)
    _ribs(grid, b, organs, vert_d)
    for side, sname in ((1, "left"), (-1, "right")):
        hip = f"hip_{sname}"
        _paint(organs, ellipsoid(grid, b.p(side * 108, 25, 700), b.s(14, 58, 58, vary=False),
                                 rot=rot_z(side * -25)), hip)
        _paint(organs, capsule(grid, b.p(side * 102, 20, 730), b.p(side * 85, 5, 812), 18.0 * b.sx), hip)
        _paint(organs, ellipsoid(grid, b.p(side * 85, 5, 822), b.s(30, 32, 34, vary=False)), hip)
        _paint(organs, capsule(grid, b.p(side * 80, -20, 835), b.p(side * 12, -72, 850), 11.0 * b.sx), hip)
        _paint(organs, capsule(grid, b.p(side * 78, 22, 835), b.p(side * 58, 30, 895), 13.0 * b.sx), hip)
        fem = f"femur_{sname}"
        _paint(organs, ellipsoid(grid, b.p(side * 90, 5, 826), b.s(23, 23, 23, vary=False)), fem)
        _paint(organs, capsule(grid, b.p(side * 90, 5, 826), b.p(side * 122, 10, 862), 15.0 * b.sx), fem)
        _paint(organs, capsule(grid, b.p(side * 122, 10, 862), b.p(side * 98, 15, 1300), 15.0 * b.sx), fem)

    organs[~body] = 0

    # --- lymph-node-like sites (physical centres), some next to hot organs
    nodes: dict[str, np.ndarray] = {}
    for side, sname in ((1, "left"), (-1, "right")):
        nodes[f"cervical_{sname}"] = b.p(side * 38, 8, 245)
        nodes[f"supraclavicular_{sname}"] = b.p(side * 55, 5, 285)
        nodes[f"axillary_{sname}"] = b.p(side * 140, 10, 345)
        nodes[f"hilar_{sname}"] = b.p(side * 40, 15, 400)
        nodes[f"para_aortic_{sname}"] = b.p(side * 32, 30, 640)
        nodes[f"iliac_{sname}"] = b.p(side * 65, 15, 760)
        nodes[f"inguinal_{sname}"] = b.p(side * 80, -70, 885)
        c, s = glands[f"parotid_{sname}"]
        nodes[f"periparotid_{sname}"] = c + np.array([side * (s[0] + 4), -s[1] * 0.6, -s[2] * 0.6])
        c, s = glands[f"submandibular_{sname}"]
        nodes[f"level_ii_{sname}"] = c + np.array([side * 2, s[1] + 8, -s[2] - 4])
        c, s = kidneys[sname]
        nodes[f"pararenal_{sname}"] = c + np.array([-side * (s[0] + 10), -s[1] * 0.3, 0])
        nodes[f"obturator_{sname}"] = bl_c + np.array([side * (bl_s[0] + 12), 0, -bl_s[2] * 0.3])
    nodes["mediastinal_prevascular"] = b.p(0, -45, 350)
    nodes["subcarinal"] = b.p(5, 15, 405)
    nodes["retrocrural"] = b.p(-18, 60, 545)
    nodes["mesenteric"] = b.p(15, -30, 690)
    nodes["presacral"] = b.p(0, 45, 790)
    params = {"scale_x": b.sx, "scale_y": b.sy, "scale_z": b.sz, "bladder_fill": fill}
    return Anatomy(organs=organs, body=body, grid=grid, node_sites=nodes, params=params)
