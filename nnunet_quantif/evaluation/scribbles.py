"""The autoPET V scribble simulator: one 2D stroke on the largest error, by one of three strategies.

The rules follow the organisers' code (``interactive/simulate_scribbles.py`` and ``interactive_loop.py`` of the
autoPET V repository, as ``../shared/reference/autopet-v-protocol.md`` cites them), with the differences listed at
the end; ``docs/METHOD.md`` gives the choices.

Component
---------
:func:`largest_slice_component`: on every axial slice (array axis 0, z), the 2D connected components of the mask
with 8-connectivity; the largest component over all slices wins. A later slice must be strictly larger to win, so a
tie goes to the lower z; within one slice a tie goes to the first component in raster order of the slice as their
nibabel (x, y) arrays hold it (x major).

Strategies (on that one 2D component)
-------------------------------------
* ``centerline`` (:func:`centerline_stroke`): the skeleton (``skimage.morphology.skeletonize``) and its largest
  8-connected piece; the two piece pixels farthest apart (the first maximum of their distance matrix); a shortest
  8-neighbour path between them within the piece; a path of more than 10 pixels loses ``int(n * 0.1)`` pixels at
  its start and keeps up to ``int(n * 0.9)``.
* ``random`` (:func:`random_stroke`): two pixels of the component drawn at random (with replacement); the digital
  line between them (``skimage.draw.line``) clipped to the component, so it can be broken where the component
  is not convex.
* ``boundary`` (:func:`boundary_stroke`): the inner boundary of the component
  (``skimage.segmentation.find_boundaries(mode="inner")``); a random boundary start pixel; then a greedy walk of
  at most ``max(2, int(0.2 * |boundary|))`` steps, each to the first unvisited 8-neighbour on the boundary (in
  their neighbour order), stopping early where there is none. The stroke has at most that many pixels plus one.

A degenerate component gives the **whole component** as the stroke: no skeleton pixel or fewer than two in its
largest piece (``centerline``), fewer than two pixels (``random``), fewer than two boundary pixels
(``boundary``).

The loop's choice
-----------------
:func:`choose_stroke`: simulate a stroke on the false positives (``prediction & ~label``, a ``background``
stroke) and one on the false negatives (``~prediction & label``, a ``tumor`` stroke), in that order, and keep the
tumor stroke when its voxel count is at least the background stroke's (``fp <= fn``: the counts of the strokes,
not of the errors; a tie goes to tumor). A lesion-free label gets no stroke.

Differences from their code (deliberate)
----------------------------------------
* Randomness: one seeded ``numpy.random.Generator`` per case (:func:`case_seed`), not Python's ``random`` reset to
  the fixed seed 42 inside every call. The generator is drawn from in a fixed order (the false-positive stroke,
  then the false-negative stroke), so a case's strokes are reproducible from its recorded seed.
* An empty error mask gives no stroke (None). Their simulator returns a 2-tuple there, which the loop's 3-value
  unpacking turns into a failed iteration scored 0; here, when only one kind of error exists its stroke is taken,
  and when neither exists (a perfect prediction) no stroke is added.
* Their code falls back to ``random`` when a strategy raises; the strategies here raise on no input (the
  degenerate cases above are handled explicitly), so there is no blanket fallback.
* Among several shortest centerline paths of equal length, ours is the breadth-first search's in their neighbour
  order (theirs is ``networkx.shortest_path``'s); the endpoints, the length and the trimming are the same.

All masks are in array order (z, y, x); the 2D work runs on each slice's (x, y) view, as their (x, y, z) arrays
hold it, so pixel orders and ties match theirs. Strokes come back as voxels in array order.
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..components import label_components
from ..io import Geometry

#: The simulator's strategies (each on a third of the cases in autoPET V).
STRATEGIES: tuple[str, str, str] = ("centerline", "random", "boundary")
#: Fraction of a centerline path trimmed at each end, and the path length (pixels) above which it is trimmed.
CENTERLINE_TRIM = 0.1
CENTERLINE_MIN_TRIMMED = 10
#: Fraction of the boundary length a boundary walk may take in steps (at least :data:`BOUNDARY_MIN_STEPS`).
BOUNDARY_FRACTION = 0.2
BOUNDARY_MIN_STEPS = 2
#: Strokes a training sample draws at most (their ``k=5`` components).
MAX_TRAINING_STROKES = 5

#: 8-neighbour offsets in their order (first axis outer, -1 before +1).
_NEIGHBOURS = tuple((d0, d1) for d0 in (-1, 0, 1) for d1 in (-1, 0, 1) if (d0, d1) != (0, 0))


@dataclass(frozen=True, eq=False)
class Scribble:
    """One simulated stroke.

    Attributes
    ----------
    voxels : np.ndarray, shape (n, 3), int64
        The stroke's voxels in array order (z, y, x), all on slice ``z``, in the order of their (x, y, z)
        ``np.argwhere`` (x major).
    z : int
        The axial slice.
    strategy : str
        The strategy that drew it.
    whole_component : bool
        Whether the strategy fell back to the whole component (a degenerate component).
    """

    voxels: np.ndarray
    z: int
    strategy: str
    whole_component: bool

    @property
    def size(self) -> int:
        """Voxel count (their ``size``, which the loop compares)."""
        return int(len(self.voxels))


def case_seed(seed: int, case: str) -> int:
    """A case's own seed from a run seed and the case name (CRC-32 of the name mixed with ``seed``), stable
    across runs and platforms."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(case.encode("utf-8"))])
               .generate_state(1)[0])


def _check_mask(mask: np.ndarray, name: str, ndim: int = 3) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D mask, got shape {arr.shape}")
    return arr if arr.dtype == bool else arr > 0


def _largest_label(labels: np.ndarray) -> tuple[int, int]:
    """(label, count) of the largest non-zero label of a cc3d labelling (the lowest label on a tie)."""
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    k = int(np.argmax(counts))
    return k, int(counts[k])


def largest_slice_component(mask: np.ndarray) -> tuple[int, np.ndarray] | None:
    """The largest 8-connected 2D component over the axial slices of ``mask``.

    Parameters
    ----------
    mask : np.ndarray, shape (z, y, x)
        Binary (> 0 is in).

    Returns
    -------
    (z, component) or None
        The slice index and the component as a (y, x) bool mask; None for an empty mask. Ties: the lower z, and
        within a slice the first component in (x, y) raster order.
    """
    m = _check_mask(mask, "mask")
    per_slice = m.reshape(m.shape[0], -1).sum(axis=1)
    best: tuple[int, np.ndarray] | None = None
    best_area = 0
    for z in np.flatnonzero(per_slice):
        if per_slice[z] <= best_area:  # its largest component cannot be strictly larger
            continue
        labels = label_components(m[z].T, 8)
        k, area = _largest_label(labels)
        if area > best_area:
            best_area, best = area, (int(z), (labels == k).T)
    return best


def _bfs_path(pixels: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]] | None:
    """A shortest 8-neighbour path from ``start`` to ``goal`` through the True pixels of ``pixels`` (2D)."""
    parent: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
    queue = deque([start])
    n0, n1 = pixels.shape
    while queue:
        p = queue.popleft()
        if p == goal:
            path = [p]
            while parent[path[-1]] is not None:
                path.append(parent[path[-1]])  # type: ignore[arg-type]
            path.reverse()
            return path
        for d0, d1 in _NEIGHBOURS:
            q = (p[0] + d0, p[1] + d1)
            if 0 <= q[0] < n0 and 0 <= q[1] < n1 and pixels[q] and q not in parent:
                parent[q] = p
                queue.append(q)
    return None


def centerline_stroke(component: np.ndarray) -> np.ndarray:
    """The ``centerline`` stroke of a 2D component (module docstring).

    Parameters
    ----------
    component : np.ndarray, 2D bool
        In the (x, y) layout of their arrays (the simulator passes a slice's transpose).

    Returns
    -------
    np.ndarray, same shape, bool
        The stroke; the whole component where the skeleton is degenerate.
    """
    from scipy.spatial.distance import cdist
    from skimage.morphology import skeletonize

    comp = _check_mask(component, "component", 2)
    skeleton = skeletonize(comp)
    labels = label_components(skeleton, 8)
    k, count = _largest_label(labels)
    if count < 2:
        return comp.copy()
    piece = labels == k
    coords = np.argwhere(piece)
    dist = cdist(coords, coords)
    i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
    path = _bfs_path(piece, tuple(int(v) for v in coords[i]), tuple(int(v) for v in coords[j]))
    if path is None:  # the piece is 8-connected, so this does not happen
        return comp.copy()
    n = len(path)
    if n > CENTERLINE_MIN_TRIMMED:
        path = path[int(n * CENTERLINE_TRIM):int(n * (1 - CENTERLINE_TRIM))]
    out = np.zeros_like(comp)
    idx = np.asarray(path).T
    out[tuple(idx)] = comp[tuple(idx)]
    return out


def random_stroke(component: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The ``random`` stroke of a 2D component: the line between two random pixels, clipped to the component.

    ``component`` as :func:`centerline_stroke`; two ``rng.integers`` draws. Fewer than two pixels: the whole
    component.
    """
    from skimage.draw import line

    comp = _check_mask(component, "component", 2)
    coords = np.argwhere(comp)
    if len(coords) < 2:
        return comp.copy()
    p1 = coords[int(rng.integers(len(coords)))]
    p2 = coords[int(rng.integers(len(coords)))]
    rr, cc = line(int(p1[0]), int(p1[1]), int(p2[0]), int(p2[1]))
    out = np.zeros_like(comp)
    out[rr, cc] = comp[rr, cc]
    return out


def boundary_stroke(component: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The ``boundary`` stroke of a 2D component: a bounded greedy walk along its inner boundary.

    ``component`` as :func:`centerline_stroke`; one ``rng.integers`` draw for the start. At most
    ``max(2, int(0.2 * |boundary|))`` steps, so at most that many pixels plus one. Fewer than two boundary
    pixels: the whole component.
    """
    from skimage.segmentation import find_boundaries

    comp = _check_mask(component, "component", 2)
    boundary = find_boundaries(comp.astype(np.uint8), mode="inner")
    coords = np.argwhere(boundary)
    if len(coords) < 2:
        return comp.copy()
    current = tuple(int(v) for v in coords[int(rng.integers(len(coords)))])
    out = np.zeros_like(comp)
    out[current] = True
    n0, n1 = boundary.shape
    for _ in range(max(BOUNDARY_MIN_STEPS, int(BOUNDARY_FRACTION * len(coords)))):
        step = next(((current[0] + d0, current[1] + d1) for d0, d1 in _NEIGHBOURS
                     if 0 <= current[0] + d0 < n0 and 0 <= current[1] + d1 < n1
                     and boundary[current[0] + d0, current[1] + d1] and not out[current[0] + d0, current[1] + d1]),
                    None)
        if step is None:
            break
        current = step
        out[current] = True
    return out


def stroke_on_component(component_xy: np.ndarray, strategy: str, rng: np.random.Generator) -> np.ndarray:
    """The stroke of ``strategy`` on a 2D component in their (x, y) layout, as a bool mask of the same shape."""
    if strategy == "centerline":
        return centerline_stroke(component_xy)
    if strategy == "random":
        return random_stroke(component_xy, rng)
    if strategy == "boundary":
        return boundary_stroke(component_xy, rng)
    raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")


def _scribble(z: int, component_yx: np.ndarray, strategy: str, rng: np.random.Generator) -> Scribble:
    """The stroke of ``strategy`` on the (y, x) component of slice ``z``, as voxels (z, y, x)."""
    comp_xy = component_yx.T
    stroke = stroke_on_component(comp_xy, strategy, rng)
    xy = np.argwhere(stroke)
    xyz = np.column_stack([xy, np.full(len(xy), z)]).astype(np.int64)
    return Scribble(Geometry.to_array_order(xyz), int(z), strategy, bool(np.array_equal(stroke, comp_xy)))


def simulate_scribble(mask: np.ndarray, strategy: str, rng: np.random.Generator) -> Scribble | None:
    """One stroke on the largest 2D component of ``mask`` (:func:`largest_slice_component`).

    Parameters
    ----------
    mask : np.ndarray, shape (z, y, x)
        Binary (an error mask, or a label).
    strategy : {'centerline', 'random', 'boundary'}
    rng : np.random.Generator
        Drawn from by ``random`` and ``boundary`` only.

    Returns
    -------
    Scribble or None
        None for an empty mask.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    found = largest_slice_component(mask)
    if found is None:
        return None
    return _scribble(found[0], found[1], strategy, rng)


def choose_stroke(prediction: np.ndarray, label: np.ndarray, strategy: str,
                  rng: np.random.Generator) -> tuple[str, Scribble] | None:
    """The stroke the autoPET V loop adds for ``prediction``: (``tumor`` or ``background``, stroke), or None.

    Parameters
    ----------
    prediction, label : np.ndarray, shape (z, y, x)
        The current predicted mask and the ground truth (> 0 is lesion), one grid.
    strategy : {'centerline', 'random', 'boundary'}
    rng : np.random.Generator
        The case's generator; the false-positive stroke draws first, then the false-negative one.

    Returns
    -------
    (label, Scribble) or None
        None for a lesion-free label and for a prediction without errors (module docstring).
    """
    pred, gt = _check_mask(prediction, "prediction"), _check_mask(label, "label")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} and label shape {gt.shape} differ")
    if not gt.any():
        return None
    background = simulate_scribble(pred & ~gt, strategy, rng)
    tumor = simulate_scribble(gt & ~pred, strategy, rng)
    if tumor is None and background is None:
        return None
    if background is None or (tumor is not None and background.size <= tumor.size):
        return "tumor", tumor  # type: ignore[return-value]
    return "background", background


def add_chosen_stroke(interactions, prediction: np.ndarray, label: np.ndarray, strategy: str,
                      rng: np.random.Generator):
    """``interactions`` with the stroke of :func:`choose_stroke` appended (as an axial stroke), and the choice.

    Returns
    -------
    (Interactions, (label, Scribble) or None)
        The interactions unchanged when no stroke is chosen.
    """
    choice = choose_stroke(prediction, label, strategy, rng)
    if choice is None:
        return interactions, None
    return interactions.with_stroke(choice[1].voxels, choice[0], axis=0), choice


# ------------------------------------------------------------------------------------------------- training
def _component_stroke(component: np.ndarray, strategy: str, rng: np.random.Generator) -> Scribble:
    """A stroke on the axial slice where a 3D component has the most voxels (the lowest such z), drawn on the
    component's whole slice mask (which may hold several 2D pieces), as their training script does."""
    per_slice = component.reshape(component.shape[0], -1).sum(axis=1)
    z = int(np.argmax(per_slice))
    return _scribble(z, component[z], strategy, rng)


def shell(label: np.ndarray, width: int = 2) -> np.ndarray:
    """The ``width``-voxel shell around a label: the label dilated ``width`` times by the 6-neighbour cross
    (``skimage.morphology.ball(1)``), less the label; (z, y, x) bool."""
    from scipy.ndimage import binary_dilation, generate_binary_structure

    gt = _check_mask(label, "label")
    return binary_dilation(gt, generate_binary_structure(3, 1), iterations=int(width)) & ~gt


def component_strokes(mask: np.ndarray, n: int, rng: np.random.Generator,
                      strategy: str | None = None) -> list[Scribble]:
    """Strokes on up to ``n`` of the 26-connected 3D components of ``mask``, drawn at random without replacement
    (their training scribbles: one stroke per component, on its largest slice).

    Parameters
    ----------
    mask : np.ndarray, shape (z, y, x)
    n : int
        Most strokes (fewer when there are fewer components).
    rng : np.random.Generator
        Draws the components, then per stroke the strategy (when ``strategy`` is None) and the stroke.
    strategy : str, optional
        One of :data:`STRATEGIES`; None draws one per stroke.

    Returns
    -------
    list of Scribble
    """
    m = _check_mask(mask, "mask")
    labels = label_components(m, 26)
    count = int(labels.max())
    if count == 0 or n <= 0:
        return []
    chosen = rng.choice(np.arange(1, count + 1), size=min(int(n), count), replace=False)
    out = []
    for k in chosen:
        s = strategy if strategy is not None else STRATEGIES[int(rng.integers(len(STRATEGIES)))]
        out.append(_component_stroke(labels == k, s, rng))
    return out


def corrupt_mask(label: np.ndarray, rng: np.random.Generator, drop: float = 0.3, n_false: int = 3,
                 max_radius: int = 3, grow: bool = True, allowed: np.ndarray | None = None) -> np.ndarray:
    """A fake previous prediction from a label: each 26-connected lesion dropped with probability ``drop``, the
    others grown (when ``grow``) or shrunk by one voxel (or kept) at random, and up to ``n_false`` random balls of
    radius 1..``max_radius`` voxels added outside the label, restricted to ``allowed`` ((z, y, x) bool) when given.
    (z, y, x) bool."""
    from scipy.ndimage import binary_dilation, binary_erosion

    gt = _check_mask(label, "label")
    labels = label_components(gt, 26)
    out = np.zeros_like(gt)
    for k in range(1, int(labels.max()) + 1):
        if rng.random() < drop:
            continue
        comp = labels == k
        change = int(rng.integers(3))
        if change == 1 and grow:
            comp = binary_dilation(comp)
        elif change == 2:
            comp = binary_erosion(comp) if binary_erosion(comp).any() else comp
        out |= comp
    zz, yy, xx = np.indices(gt.shape, sparse=True)
    for _ in range(int(rng.integers(n_false + 1))):
        c = [int(rng.integers(s)) for s in gt.shape]
        r = int(rng.integers(1, max_radius + 1))
        ball = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r) & ~gt
        out |= ball if allowed is None else ball & allowed
    return out


def training_strokes(label: np.ndarray, rng: np.random.Generator, *, max_strokes: int = MAX_TRAINING_STROKES,
                     strategy: str | None = None, previous: np.ndarray | None = None):
    """The strokes of one training sample, as :class:`~nnunet_quantif.interactions.Interactions`.

    * Without ``previous``: 0..``max_strokes`` tumor strokes on random lesion components and 0..``max_strokes``
      background strokes on random components of the 2-voxel :func:`shell` around the label (each count drawn
      uniformly; their training scribbles use 5 and 5), tumor strokes first.
    * With ``previous`` (a prediction to correct, e.g. :func:`corrupt_mask` of the label): 0..``max_strokes``
      rounds of the loop's choice (:func:`choose_stroke`); after each, the 26-connected 3D error component under
      the stroke is corrected in the working mask, so the next stroke goes to another error (as msdsn's
      training simulation). Stops early when no stroke is left.

    Parameters
    ----------
    label : np.ndarray, shape (z, y, x)
    rng : np.random.Generator
    max_strokes : int
    strategy : str, optional
        One of :data:`STRATEGIES`; None draws one per stroke.
    previous : np.ndarray, shape (z, y, x), optional

    Returns
    -------
    Interactions
        Axial strokes in the order drawn.
    """
    from ..interactions import Interactions

    gt = _check_mask(label, "label")
    inter = Interactions.empty()
    if previous is None:
        n_tumor, n_background = (int(rng.integers(max_strokes + 1)) for _ in range(2))
        for kind, mask, n in (("tumor", gt, n_tumor), ("background", shell(gt), n_background)):
            for s in component_strokes(mask, n, rng, strategy):
                inter = inter.with_stroke(s.voxels, kind, axis=0)
        return inter
    pred = _check_mask(previous, "previous").copy()
    for _ in range(int(rng.integers(max_strokes + 1))):
        s = strategy if strategy is not None else STRATEGIES[int(rng.integers(len(STRATEGIES)))]
        choice = choose_stroke(pred, gt, s, rng)
        if choice is None:
            break
        kind, stroke = choice
        inter = inter.with_stroke(stroke.voxels, kind, axis=0)
        error = (gt & ~pred) if kind == "tumor" else (pred & ~gt)
        labels = label_components(error, 26)
        fixed = np.isin(labels, np.unique(labels[tuple(stroke.voxels.T)]))
        pred[fixed] = kind == "tumor"
    return inter
