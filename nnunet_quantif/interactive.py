"""Live click refinement: a session that updates the lesion mask per click.

:class:`Session` loads the models once (a :class:`~nnunet_quantif.inference.pipeline.QuantIFPipeline`),
then for one case (:meth:`Session.open`) reads and preprocesses the images once, routes the case once
and predicts step 0 (no clicks). Each :meth:`Session.add_click`, :meth:`Session.add_stroke` (a stroke's voxels as
clicks of its kind), :meth:`Session.undo` and
:meth:`Session.reset` returns the updated mask, which is exactly the mask of the normal pipeline
(``quantif predict``) for the same clicks: click channels with the model's input contract, nnU-Net
preprocessing, sliding window with the case's mirroring axes, resampling back, post-processing.

Incremental prediction
----------------------
A click changes the click channels (the model's input contract, :mod:`nnunet_quantif.heatmap_definition`)
only near the click (the Gaussian cube of the click; for a tumor click of the PET-gated heatmap also the
background term it masks there). A session keeps:

* the preprocessed case (one copy, padded to the patch size as nnU-Net pads it);
* the Gaussian-weighted logits of every sliding-window tile of every fold (float32, what nnU-Net adds
  into its accumulator) and each fold's float16 accumulator.

On a click the new click channels are built, preprocessed (transpose, crop to the stored nonzero box,
normalisation, resampling; only the changed box when resampling is the identity and every click channel's
normalisation is voxel-wise), and compared with the stored channels: the box of preprocessed voxels that
changed in any click channel is exact, not estimated (a channel normalised over the whole image, such as
z-score, changes everywhere, so every tile runs again). Only the tiles that intersect it are run again; the
accumulator is rebuilt over the union of those tiles by adding every tile that touches it in nnU-Net's
order, so the logits there are bit-identical to a full sliding window (float16 additions in the same order),
and elsewhere they are unchanged. When a click makes a click channel non-zero outside nnU-Net's crop box, or
a channel normalises inside the nonzero mask, the whole case is preprocessed again and the changed box is
found the same way (all tiles when the crop box itself changes). The raw changed box is the bounding box of
the voxels where any click channel differs (exact for both background modes, including the ``authors`` mode,
whose normalisation is not local). When nnU-Net resamples the case, the whole click channels are resampled
again (the cubic spline has no finite support).

Click channels that the contract builds on the preprocessed grid (``preprocessed`` stage, e.g. LesionLocator's
distance balls) need no preprocessing: they are built again on the stored grid and compared with the stored
channels, and their changed box joins the others.

Without resampling, the preprocessed segmentation is also kept, and only the updated box of logits is
converted again; the post-processing (connected components with the PET) runs on the whole mask.

Memory: besides the images and one preprocessed copy, the stored tile logits take about
``n_folds x K x 4 bytes x (1 / tile_step_size)^3`` per preprocessed voxel (64 bytes for 2 labels, one
fold and nnU-Net's step 0.5), which is the price of the reuse. A lean session (``lean=True``,
``quantif session --lean``) stores no tile: it keeps each fold's float16 accumulator (``K x 2`` bytes per
voxel and fold) and, on a click, runs every tile that overlaps the box of the changed tiles while it rebuilds
the accumulator there in nnU-Net's order, so its masks are those of the stored-tile session and of a full
re-prediction, for more tiles per click.

Coordinates: clicks are voxel indices in image order (x, y, z), as in the click files; masks and
probabilities are arrays in (z, y, x) order on the case's grid.

Besides the clicks that feed the model, a session keeps its interactions in order
(:attr:`Session.interactions`: each click a point, each stroke one entry with its id), which undo and reset
follow; :func:`save_interactions` writes them beside a mask in both JSON forms.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .clicks import Clicks
from .errors import ClickError, ConfigError, InputFileError, QuantIFError
from .heatmap_definition import PreprocessedGrid
from .interactions import Interactions
from .io import Geometry, PathLike

#: Click kinds accepted by :meth:`Session.add_click`.
CLICK_KINDS: tuple[str, ...] = ("tumor", "background")

#: Normalisation schemes that act voxel by voxel (the changed box can be normalised alone).
_VOXELWISE_NORMALIZATION = ("NoNormalization", "CTNormalization")


class SessionError(QuantIFError):
    """A session is used out of order (no case opened, nothing to undo)."""


@dataclass
class UpdateInfo:
    """What the latest update of a session did.

    Attributes
    ----------
    kind : str
        ``'open'``, ``'tumor'``, ``'background'``, ``'stroke'``, ``'undo'`` or ``'reset'``.
    mode : str
        ``'full'`` (every tile), ``'incremental'`` (the tiles of the changed box) or
        ``'unchanged'`` (the preprocessed input did not change).
    tiles_run : int
        Sliding-window tiles run, summed over folds.
    tiles_total : int
        Tiles of a full prediction, summed over folds.
    seconds : float
        Wall time of the update (heatmap to post-processed mask).
    changed_box : tuple of slice or None
        Box of changed preprocessed voxels (preprocessed, transposed array order).
    """

    kind: str
    mode: str
    tiles_run: int
    tiles_total: int
    seconds: float
    changed_box: tuple[slice, ...] | None = None


def _bbox(changed: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the True voxels of ``changed`` (None when there are none)."""
    if not changed.any():
        return None
    box = []
    for axis in range(changed.ndim):
        other = tuple(a for a in range(changed.ndim) if a != axis)
        idx = np.flatnonzero(changed.any(axis=other))
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def _union(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    """The bounding box of two boxes (None: empty)."""
    if a is None or b is None:
        return b if a is None else a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def _intersect(a: Sequence[slice], b: Sequence[slice]) -> tuple[slice, ...] | None:
    out = []
    for sa, sb in zip(a, b):
        lo, hi = max(sa.start, sb.start), min(sa.stop, sb.stop)
        if lo >= hi:
            return None
        out.append(slice(lo, hi))
    return tuple(out)


class Session:
    """An interactive segmentation session on one case at a time.

    Parameters
    ----------
    model_fdg, model_psma : path-like, optional
        nnU-Net trained-model folders (as for :class:`~nnunet_quantif.inference.pipeline.QuantIFPipeline`).
    device : str or torch.device, optional
        Default: CUDA when available.
    mirroring : str or MirroringPolicy, optional
        Test-time mirroring policy; the axes are decided once per case, at :meth:`open`. None: the model's
        recorded policy, else the pipeline's default for the device
        (:func:`~nnunet_quantif.inference.pipeline.resolve_settings`).
    pipeline : QuantIFPipeline, optional
        An existing pipeline (its models, options and post-processing) instead of the arguments above.
    incremental : bool
        Re-run only the tiles a click changes (default). False re-runs every tile on each click
        (same result; for comparisons).
    lean : bool
        Keep no tile logits, only each fold's float16 accumulator (2 bytes per label and preprocessed voxel
        and fold, against about 32 bytes per label and voxel and fold for the stored tiles at step 0.5). A
        click then runs every tile that overlaps the box of the tiles it changes, in nnU-Net's order, so the
        mask stays exactly that of a full re-prediction; it costs more tiles per click.
    **pipeline_kwargs
        Further :class:`QuantIFPipeline` options (folds, checkpoint, tile_step_size, postprocess, ...).
    """

    def __init__(self, model_fdg: PathLike | None = None, model_psma: PathLike | None = None, *,
                 device: object = None, mirroring: object = None, pipeline=None, incremental: bool = True,
                 lean: bool = False, **pipeline_kwargs) -> None:
        from .inference.pipeline import QuantIFPipeline

        if pipeline is None:
            pipeline = QuantIFPipeline(model_fdg, model_psma, device=device, mirroring=mirroring,
                                       **pipeline_kwargs)
        problem = getattr(pipeline, "live_session_problem", None)
        if problem:
            raise ConfigError(problem)
        self.pipeline = pipeline.load()
        self.incremental = incremental
        self.lean = lean
        self.last_update: UpdateInfo | None = None
        self._case: dict | None = None
        self._clicks = Clicks.empty()
        self._interactions = Interactions.empty()
        self._history: list[tuple[Clicks, Interactions]] = []  # (clicks, interactions) before each change

    # ------------------------------------------------------------------ case
    def open(self, ct: np.ndarray | PathLike, pet: np.ndarray | PathLike, geometry: Geometry | None = None, *,
             tracer: str = "auto", case_name: str | None = None) -> np.ndarray:
        """Read and preprocess a case once, route it once and predict step 0 (no clicks).

        Parameters
        ----------
        ct, pet : np.ndarray of shape (z, y, x), or path-like
            CT in HU and PET in SUV on one grid, as arrays (with ``geometry``) or image files.
        geometry : Geometry, optional
            The grid of the arrays (required with arrays; read from the PET file otherwise).
        tracer : {'auto', 'fdg', 'psma', 'name'}
            Routing, as in ``quantif predict``.
        case_name : str, optional
            For ``tracer='name'`` and the lesion table.

        Returns
        -------
        np.ndarray, shape (z, y, x), uint8
            The step-0 mask.
        """

        from .inference.pipeline import read_case_images

        t0 = time.perf_counter()
        source = None
        if isinstance(ct, (str, os.PathLike)) or isinstance(pet, (str, os.PathLike)):
            source = str(pet)
            ct_a, pet_a, geometry = read_case_images(ct, pet, self.pipeline.nonfinite)
            case_name = case_name or Path(str(pet)).name.split(".")[0]
        else:
            if geometry is None:
                raise InputFileError("Session.open: arrays need their geometry")
            ct_a, pet_a = np.asarray(ct, dtype=np.float32), np.asarray(pet, dtype=np.float32)
        case_name = case_name or "case"
        if ct_a.shape != pet_a.shape or tuple(pet_a.shape) != geometry.shape:
            raise InputFileError(f"{source or case_name}: CT {ct_a.shape}, PET {pet_a.shape} and geometry "
                                 f"{geometry.shape} (z, y, x) differ")
        pipe = self.pipeline
        decision = pipe.decide(tracer, pet=pet_a, geometry=geometry, case_name=case_name, source=source)
        predictor = pipe.predictor(decision.tracer)  # its channel count checked against the contract
        contract = pipe.contracts[decision.tracer]
        clicks = Clicks.empty()
        heatmap = contract.click_channels(pet_a, clicks, source=source)
        data, properties = self._preprocess_all(predictor, contract, ct_a, pet_a, heatmap, geometry, clicks)
        previous = (self._case, self._clicks, self._interactions, self._history, self.last_update)
        try:
            case = dict(name=case_name, source=source, ct=ct_a, pet=pet_a, geometry=geometry, tracer=decision,
                        predictor=predictor, contract=contract, settings=pipe.settings[decision.tracer],
                        heatmap=heatmap, transpose=[int(t) for t in predictor.plans_manager.transpose_forward],
                        mask=None, lesions=None)
            self._open_case(case, data, properties, t0)
        except BaseException:  # the previous case (if any) stays open
            self._case, self._clicks, self._interactions, self._history, self.last_update = previous
            raise
        return self.mask

    def _open_case(self, case: dict, data: np.ndarray, properties: dict, t0: float) -> None:
        """Lay out a freshly preprocessed case, decide its mirroring axes and predict step 0."""
        self._case = case
        predictor, geometry, pet_a = case["predictor"], case["geometry"], case["pet"]
        self._build(data, properties)
        del data
        padded, revert = self._case["padded"], self._case["revert"]
        # mirroring axes, decided once for the case (as the pipeline decides them per case)
        predictor.case_direction = geometry.direction
        predictor.case_raw_shape = tuple(int(s) for s in pet_a.shape)
        predictor.case_budget_s, predictor.case_deadline = None, t0 + case["settings"].policy.time_budget_s
        try:
            mirror = predictor.decide_mirroring(padded[(slice(None), *revert)],
                                                n_folds=len(predictor.list_of_parameters))
        finally:
            predictor.case_direction = predictor.case_budget_s = predictor.case_deadline = None
            predictor.case_raw_shape = None
        self._case.update(axes=mirror.axes if mirror.axes else None, flips=mirror.combos, mirroring=mirror)
        self._clicks = Clicks.empty()
        self._interactions = Interactions.empty()
        self._history = []
        n_tiles = len(self._case["slicers"]) * len(predictor.list_of_parameters)
        self._predict_all()
        self.last_update = UpdateInfo("open", "full", n_tiles, n_tiles, time.perf_counter() - t0)

    # ------------------------------------------------------------------ clicks
    def add_click(self, xyz: Sequence[int], kind: str) -> np.ndarray:
        """Add one click given in image order (x, y, z), as in the click files, and return the updated mask.

        The same as :meth:`add_click_zyx` with the index in array order; see there.
        """
        self._need_case()
        return self.add_click_zyx(self._click_index(xyz, image_order=True), kind)

    def add_click_zyx(self, zyx: Sequence[int], kind: str) -> np.ndarray:
        """Add one click and return the updated mask.

        Parameters
        ----------
        zyx : 3 ints
            Voxel index in array order (z, y, x): the click addresses ``mask[z, y, x]``.
        kind : {'tumor', 'background'}

        Returns
        -------
        np.ndarray, shape (z, y, x), uint8

        Raises
        ------
        ClickError
            Unknown kind, a click that is not 3 integers inside the image, or one click more than the pipeline's
            ``max_clicks``; the session is unchanged.
        """
        case = self._need_case()
        if kind not in CLICK_KINDS:
            raise ClickError(f"unknown click kind {kind!r} (use one of {', '.join(CLICK_KINDS)})")
        limit = getattr(self.pipeline, "max_clicks", None)
        if limit is not None and len(self._clicks) >= limit:
            raise ClickError(f"the session holds {len(self._clicks)} clicks, the limit (--max-clicks {limit})")
        click = np.asarray([self._click_index(zyx)], dtype=np.int64)
        old = self._clicks
        new = Clicks(np.concatenate([old.tumor, click]) if kind == "tumor" else old.tumor,
                     np.concatenate([old.background, click]) if kind == "background" else old.background)
        new.check_inside(case["pet"].shape, source="the session")
        self._set_clicks(new, kind)
        self._history.append((old, self._interactions))
        self._interactions = self._interactions.with_point(click[0], kind)
        return self.mask

    def add_stroke(self, voxels: np.ndarray | Sequence[Sequence[int]], kind: str,
                   axis: int | None = None) -> np.ndarray:
        """Add one stroke (a set of voxels on one slice) and return the updated mask.

        The stroke's voxels join the session's clicks of ``kind`` (each voxel once, those already there left
        out), as the autoPET V evaluation passes strokes to a model: the stroke encodings of the input contract
        depend only on each label's voxel set, so a stroke-trained model gets its stroke channels, and a
        click-trained model gets every stroke voxel as a click. As for a click, only the sliding-window tiles whose
        preprocessed click channels change are re-run, and the mask is the pipeline's for the same clicks.
        :meth:`undo` removes the whole stroke.

        Parameters
        ----------
        voxels : array-like, shape (n, 3), int
            Voxel indices in array order (z, y, x), all on one slice normal to ``axis``.
        kind : {'tumor', 'background'}
        axis : int, optional
            The array axis normal to the stroke's slice (0 axial, 1 coronal, 2 sagittal); None: the first axis
            the voxels agree on.

        Returns
        -------
        np.ndarray, shape (z, y, x), uint8

        Raises
        ------
        ClickError
            Unknown kind, voxels that are not one stroke (not (n, 3) integers on one slice), a voxel outside the
            image, or more clicks than the pipeline's ``max_clicks``; the session is unchanged.
        """
        from .interactions import Interaction

        case = self._need_case()
        if kind not in CLICK_KINDS:
            raise ClickError(f"unknown stroke kind {kind!r} (use one of {', '.join(CLICK_KINDS)})")
        try:
            raw = np.asarray(voxels)
            if raw.dtype.kind not in "iu" and not (raw.dtype.kind == "f" and np.all(raw == np.round(raw))):
                raise ValueError("voxel indices must be integers")
            entry = Interaction("stroke", kind, raw.astype(np.int64), axis)
            stroke = entry.voxels
        except (TypeError, ValueError) as e:
            raise ClickError(f"not a stroke: {e}") from None
        old = self._clicks
        present = old.tumor if kind == "tumor" else old.background
        known = {tuple(v) for v in np.asarray(present, dtype=np.int64).reshape(-1, 3).tolist()}
        added = np.asarray([v for v in stroke.tolist() if tuple(v) not in known], dtype=np.int64).reshape(-1, 3)
        limit = getattr(self.pipeline, "max_clicks", None)
        if limit is not None and len(old) + len(added) > limit:
            raise ClickError(f"a stroke of {len(added)} new voxels on top of {len(old)} clicks exceeds the limit "
                             f"(--max-clicks {limit})")
        new = Clicks(np.concatenate([old.tumor, added]) if kind == "tumor" else old.tumor,
                     np.concatenate([old.background, added]) if kind == "background" else old.background)
        new.check_inside(case["pet"].shape, source="the session")
        self._set_clicks(new, "stroke")
        self._history.append((old, self._interactions))
        self._interactions = self._interactions.with_stroke(stroke, kind, entry.axis)
        return self.mask

    @staticmethod
    def _click_index(values: Sequence[int], *, image_order: bool = False) -> tuple[int, int, int]:
        """``values`` as 3 integer voxel indices in array order (z, y, x); ``image_order``: given as (x, y, z)."""
        order = "(x, y, z)" if image_order else "(z, y, x)"
        try:
            ints = [int(v) for v in values]
            if len(ints) != 3 or any(float(v) != int(v) for v in values):
                raise ValueError
        except (TypeError, ValueError):
            raise ClickError(f"a click is 3 integer voxel indices {order}, got {values!r}") from None
        if image_order:
            ints = [int(v) for v in Geometry.to_array_order(ints)]
        return ints[0], ints[1], ints[2]

    def undo(self) -> np.ndarray:
        """Remove the latest click or stroke (or undo the latest reset) and return the updated mask.

        Raises
        ------
        SessionError
            Nothing to undo.
        """
        self._need_case()
        if not self._history:
            raise SessionError("nothing to undo")
        clicks, interactions = self._history[-1]
        self._set_clicks(clicks, "undo")
        self._interactions = interactions
        self._history.pop()
        return self.mask

    def reset(self) -> np.ndarray:
        """Remove every click (undoable) and return the step-0 mask."""
        self._need_case()
        old = self._clicks
        self._set_clicks(Clicks.empty(), "reset")
        self._history.append((old, self._interactions))
        self._interactions = Interactions.empty()
        return self.mask

    # ------------------------------------------------------------------ properties
    @property
    def clicks(self) -> Clicks:
        """The clicks so far (array order (z, y, x); ``tumor_xyz()``/``background_xyz()`` for (x, y, z))."""
        self._need_case()
        return self._clicks

    @property
    def interactions(self) -> Interactions:
        """The session's interactions in the order given: each click a point, each stroke one entry (all its
        voxels, also those that were already clicks), array order (z, y, x). Undo and reset follow it."""
        self._need_case()
        return self._interactions

    @property
    def mask(self) -> np.ndarray:
        """The current post-processed mask, (z, y, x) uint8 0/1 on the case's grid (a read-only view)."""
        mask = self._need_case()["mask"].view()
        mask.flags.writeable = False
        return mask

    @property
    def probabilities(self) -> np.ndarray:
        """Softmax probabilities of the current prediction before post-processing.

        Returns
        -------
        np.ndarray, shape (K, z, y, x), float32
            One channel per label (0 = background) on the case's grid.
        """
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        case = self._need_case()
        p = case["predictor"]
        _, probs = convert_predicted_logits_to_segmentation_with_correct_shape(
            case["logits"].clone(), p.plans_manager, p.configuration_manager, p.label_manager,
            case["properties"], return_probabilities=True)
        return np.asarray(probs, dtype=np.float32)

    @property
    def logits(self) -> np.ndarray:
        """The ensemble logits in preprocessed space, (K, *preprocessed shape) float32 (transposed, cropped)."""
        return self._need_case()["logits"].float().numpy()

    @property
    def lesions(self):
        """Per-lesion measurements of the current mask (:class:`~nnunet_quantif.quantify.CaseStats`)."""
        from .quantify import quantify

        case = self._need_case()
        if case["lesions"] is None:
            case["lesions"] = quantify(case["mask"], case["pet"], case["geometry"], case=case["name"],
                                       pet_source=case["source"])
        return case["lesions"]

    @property
    def geometry(self) -> Geometry:
        """The case's grid."""
        return self._need_case()["geometry"]

    @property
    def tracer(self) -> str:
        """The tracer the case was routed to."""
        return self._need_case()["tracer"].tracer

    @property
    def tracer_decision(self):
        """How the case was routed (:class:`~nnunet_quantif.inference.routing.TracerDecision`: tracer, source and
        the classifier's P(PSMA) when it decided)."""
        return self._need_case()["tracer"]

    @property
    def images(self) -> tuple[np.ndarray, np.ndarray]:
        """The case's CT (HU) and PET (SUV), (z, y, x) float32 on the case's grid (read-only views)."""
        case = self._need_case()
        views = case["ct"].view(), case["pet"].view()
        for v in views:
            v.flags.writeable = False
        return views

    @property
    def case_name(self) -> str:
        """The case's name (the lesion table's ``case``)."""
        return self._need_case()["name"]

    # ------------------------------------------------------------------ internals
    def _need_case(self) -> dict:
        if self._case is None:
            raise SessionError("no case is open: call open(ct, pet, geometry) first")
        return self._case

    def _build(self, data: np.ndarray, properties: dict) -> None:
        """Pad the preprocessed case ``data`` (C, *preprocessed shape) as nnU-Net does and lay out its tiles;
        drops every stored tile."""
        import torch
        from acvl_utils.cropping_and_padding.padding import pad_nd_image
        from nnunetv2.inference.sliding_window_prediction import compute_gaussian

        case = self._case
        p = case["predictor"]
        patch = tuple(int(s) for s in p.configuration_manager.patch_size)
        padded, revert = pad_nd_image(torch.from_numpy(data), patch, "constant", {"value": 0}, True, None)
        slicers = p._internal_get_sliding_window_slicers(padded.shape[1:])
        gaussian = compute_gaussian(patch, sigma_scale=1. / 8, value_scaling_factor=10,
                                    device=torch.device("cpu")) if p.use_gaussian else 1
        n_pred = torch.zeros(padded.shape[1:], dtype=torch.half)
        for sl in slicers:
            n_pred[sl[1:]] += gaussian
        case.update(properties=properties, padded=padded, revert=tuple(revert[1:]), slicers=slicers,
                    gaussian=gaussian, n_pred=n_pred, tiles=None, acc=None, logits=None, seg=None, tiles_run=0)

    def _predict_all(self) -> None:
        """Run every tile and rebuild the logits and the mask."""
        case = self._case
        self._run_tiles(range(len(case["slicers"])))
        self._finish(self._accumulate(tuple(slice(0, s) for s in case["padded"].shape[1:])))

    def _preprocess_all(self, predictor, contract, ct: np.ndarray, pet: np.ndarray, heatmap: np.ndarray,
                        geometry: Geometry, clicks: Clicks) -> tuple[np.ndarray, dict]:
        """nnU-Net preprocessing of every channel (``heatmap``: the (k, z, y, x) click channels built on the image
        grid, stacked in the order of ``contract``), then the click channels built on the preprocessed grid from
        ``clicks``: (C, *preprocessed shape) float32 and the properties."""
        image = contract.stack(ct, pet, heatmap)
        pre = predictor.configuration_manager.preprocessor_class(verbose=False)
        properties = {"spacing": [float(s) for s in geometry.spacing_zyx]}
        data, _, properties = pre.run_case_npy(image, None, properties, predictor.plans_manager,
                                               predictor.configuration_manager, predictor.dataset_json)
        data = contract.complete_preprocessed(data, properties, predictor.plans_manager.transpose_forward, clicks)
        return data, properties

    def _preprocess_heatmap(self, heatmap: np.ndarray,
                            changed_raw: tuple[slice, ...]) -> tuple[tuple[slice, ...], np.ndarray] | None:
        """Preprocess the new click channels where they can have changed.

        Parameters
        ----------
        heatmap : np.ndarray, shape (k, z, y, x), float32
            The new raw click channels (in the order of the model's contract).
        changed_raw : tuple of 3 slices
            Box of the raw voxels where any click channel differs from the stored ones (z, y, x).

        Returns
        -------
        (box, values) or None
            ``values`` (k, ...) float32 replace the preprocessed click channels inside ``box`` (preprocessed,
            transposed array coordinates): the changed box alone when resampling is the identity and
            every click channel's normalisation is voxel-wise, else the whole channels. None when the whole
            case must be preprocessed again (a click channel becomes non-zero outside nnU-Net's crop box,
            or a channel normalises inside the nonzero mask).
        """
        import nnunetv2
        from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape
        from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

        case = self._case
        p = case["predictor"]
        cm, props = p.configuration_manager, case["properties"]
        if any(cm.use_mask_for_norm):
            return None
        ht = heatmap.transpose([0, *(t + 1 for t in case["transpose"])])
        box_t = tuple(changed_raw[i] for i in case["transpose"])
        crop = tuple(slice(int(lo), int(hi)) for lo, hi in props["bbox_used_for_cropping"])
        inner = _intersect(box_t, crop)
        if inner != box_t:  # the stored heatmap is zero outside the crop box: only the changed box can break that
            outside = ht[(slice(None), *box_t)].copy()
            if inner is not None:
                outside[(slice(None), *(slice(i.start - b.start, i.stop - b.start) for i, b in zip(inner, box_t)))] = 0
            if outside.any():
                return None
        if inner is None:
            return None  # pragma: no cover - a change outside the crop box is non-zero there
        properties = p.plans_manager.foreground_intensity_properties_per_channel
        normalizers = []
        contract = case["contract"]
        for c in contract.native_click_indices:
            i = contract.native_indices.index(c)  # its place among the channels nnU-Net preprocesses
            scheme = cm.normalization_schemes[i]
            norm_class = recursive_find_python_class(
                os.path.join(nnunetv2.__path__[0], "preprocessing", "normalization"), scheme,
                "nnunetv2.preprocessing.normalization")
            normalizers.append((scheme, norm_class(use_mask_for_norm=False, intensityproperties=properties[str(i)])))
        cropped_shape = tuple(s.stop - s.start for s in crop)
        spacing_t = [props["spacing"][i] for i in case["transpose"]]
        new_shape = tuple(int(s) for s in compute_new_shape(cropped_shape, spacing_t, cm.spacing))
        if new_shape == cropped_shape and all(scheme in _VOXELWISE_NORMALIZATION for scheme, _ in normalizers):
            local = tuple(slice(s.start - c.start, s.stop - c.start) for s, c in zip(inner, crop))
            return local, np.stack([np.asarray(n.run(ht[(k, *inner)].astype(np.float32), None), dtype=np.float32)
                                    for k, (_, n) in enumerate(normalizers)])
        channels = ht[(slice(None), *crop)].astype(np.float32)
        for k, (_, n) in enumerate(normalizers):
            channels[k] = n.run(channels[k], None)
        values = np.asarray(cm.resampling_fn_data(channels, new_shape, spacing_t, cm.spacing), dtype=np.float32)
        return tuple(slice(0, s) for s in values.shape[1:]), values

    def _set_clicks(self, clicks: Clicks, kind: str) -> None:
        """Make ``clicks`` the session's clicks and update the prediction (state unchanged on error)."""
        import torch

        t0 = time.perf_counter()
        case = self._case
        p = case["predictor"]
        contract = case["contract"]
        heatmap = contract.click_channels(case["pet"], clicks, source=case["source"])
        diff = (heatmap != case["heatmap"]).any(axis=0)  # a voxel changed in any click channel
        changed_raw = _bbox(diff)
        del diff
        n_folds = len(p.list_of_parameters)
        total = len(case["slicers"]) * n_folds
        padded, revert = case["padded"], case["revert"]
        box = None
        if changed_raw is None and not contract.preprocessed_click_indices:
            self._unchanged(clicks, kind, total, t0)
            return
        update = self._preprocess_heatmap(heatmap, changed_raw) if changed_raw is not None else ((), None)
        full = not self.incremental
        if update is not None:
            local, values = update
            for k, c in enumerate(contract.native_click_indices if values is not None else ()):
                box = _union(box, self._replace_channel(padded[c][revert], local, values[k]))
            if contract.preprocessed_click_indices:  # built on the stored preprocessed grid
                grid = PreprocessedGrid.from_properties(case["properties"], padded[0][revert].shape,
                                                        case["transpose"])
                values = contract.preprocessed_click_channels(grid, clicks)
                whole = tuple(slice(0, n) for n in grid.shape)
                for k, c in enumerate(contract.preprocessed_click_indices):
                    box = _union(box, self._replace_channel(padded[c][revert], whole, values[k]))
        else:  # the whole case again
            data, properties = self._preprocess_all(p, contract, case["ct"], case["pet"], heatmap,
                                                    case["geometry"], clicks)
            same = (np.array_equal(properties["bbox_used_for_cropping"], case["properties"]["bbox_used_for_cropping"])
                    and tuple(data.shape[1:]) == tuple(padded[0][revert].shape))
            if not same:  # another crop box: every tile
                self._build(data, properties)
                case["heatmap"] = heatmap
                self._clicks = clicks
                self._predict_all()
                self.last_update = UpdateInfo(kind, "full", total, total, time.perf_counter() - t0)
                return
            current = padded[(slice(None), *revert)].numpy()
            box = _bbox((data != current).any(axis=0))
            padded[(slice(None), *revert)] = torch.from_numpy(data)
            case["properties"] = properties
        case["heatmap"] = heatmap
        if box is None:
            self._unchanged(clicks, kind, total, t0)
            return
        self._clicks = clicks
        box_padded = tuple(slice(b.start + r.start, b.stop + r.start) for b, r in zip(box, revert))
        if full:
            todo = list(range(len(case["slicers"])))
        else:
            todo = [i for i, sl in enumerate(case["slicers"]) if _intersect(sl[1:], box_padded) is not None]
        runs_before = case["tiles_run"]
        self._run_tiles(todo)
        region = [(min(case["slicers"][i][a + 1].start for i in todo), max(case["slicers"][i][a + 1].stop
                                                                           for i in todo)) for a in range(3)]
        self._finish(self._accumulate(tuple(slice(lo, hi) for lo, hi in region)))
        self.last_update = UpdateInfo(kind, "full" if full else "incremental", case["tiles_run"] - runs_before,
                                      total, time.perf_counter() - t0, box)

    def _unchanged(self, clicks: Clicks, kind: str, total: int, t0: float) -> None:
        """Take ``clicks`` whose input channels equal the current ones: the logits stay; the mask is post-processed
        again only when the tumor voxels that post-processing keeps changed."""
        before = self._clicks
        self._clicks = clicks
        if (self._case["settings"].postprocess and self.pipeline.keep_clicked
                and not np.array_equal(before.tumor, clicks.tumor)):
            self._finish(None)
        self.last_update = UpdateInfo(kind, "unchanged", 0, total, time.perf_counter() - t0)

    @staticmethod
    def _replace_channel(channel, local: tuple[slice, ...], values: np.ndarray) -> tuple[slice, ...] | None:
        """Write ``values`` into ``channel[local]`` (a view of one preprocessed channel, a torch tensor) and
        return the box (channel coordinates) where they differ from what it held; None: nothing changed."""
        import torch

        target = channel[local]
        sub = _bbox(values != target.numpy())
        target.copy_(torch.from_numpy(values))
        if sub is None:
            return None
        return tuple(slice(lo.start + s.start, lo.start + s.stop) for lo, s in zip(local, sub))

    @contextlib.contextmanager
    def _tile_runner(self):
        """The network set up for this case's tiles; yields ``run(f, indices)``: fold ``f``'s Gaussian-weighted
        logits of the tiles ``indices``, a list of float32 (K, *patch), as nnU-Net's sliding window computes them.

        The tiles go through the network in the sliding window's groups
        (:meth:`~nnunet_quantif.inference.predictor.QuantIFPredictor.tiles_per_step`), each with its mirrored
        copies (on CPU, up to 8 inputs per forward for a small patch). On CPU every forward holds at least 2
        inputs, and a tile's logits do not depend on which tiles share its forward
        (``tests/test_interactive.py::test_tile_logits_do_not_depend_on_the_batch``), so a click that re-runs
        some tiles gives the logits of a full prediction.
        """
        import torch
        from nnunetv2.configuration import default_num_processes
        from nnunetv2.utilities.helpers import dummy_context

        case = self._case
        p = case["predictor"]
        n_threads = torch.get_num_threads()
        torch.set_num_threads(default_num_processes if default_num_processes < n_threads else n_threads)
        p.prepare_network()  # on the device, in eval mode; compiled once with the pipeline's --compile
        model_axes = p.allowed_mirroring_axes
        p.allowed_mirroring_axes, p.case_flips = case["axes"], case.get("flips")
        net = p.network._orig_mod if hasattr(p.network, "_orig_mod") else p.network
        loaded: list[int | None] = [None]
        step = p.tiles_per_step()

        def run(f: int, indices: Sequence[int]) -> list:
            if loaded[0] != f:
                net.load_state_dict(p.list_of_parameters[f])
                loaded[0] = f
            amp = torch.autocast(p.device.type, enabled=True) if p.device.type == "cuda" else dummy_context()
            out = []
            indices = list(indices)
            with torch.inference_mode(), amp:
                for start in range(0, len(indices), step):
                    group = indices[start:start + step]
                    tiles = torch.stack([case["padded"][case["slicers"][i]] for i in group])
                    pred = p._internal_maybe_mirror_and_predict(tiles.to(p.device)).to("cpu")
                    if p.use_gaussian:
                        pred *= case["gaussian"]
                    out.extend(pred.unbind(0))
                    case["tiles_run"] += len(group)
            return out

        try:
            yield run
        finally:
            p.allowed_mirroring_axes, p.case_flips = model_axes, None

    def _run_tiles(self, indices: Sequence[int]) -> None:
        """Run the network on the tiles ``indices`` for every fold and store their Gaussian-weighted logits.
        A lean session stores none: :meth:`_accumulate` runs the tiles it needs."""
        case = self._case
        if self.lean:
            return
        n_folds = len(case["predictor"].list_of_parameters)
        if case["tiles"] is None:
            case["tiles"] = [[None] * len(case["slicers"]) for _ in range(n_folds)]
        indices = list(indices)
        with self._tile_runner() as run:
            for f in range(n_folds):
                for i, tile in zip(indices, run(f, indices)):
                    case["tiles"][f][i] = tile

    def _accumulate(self, region: tuple[slice, ...]) -> tuple[slice, ...] | None:
        """Rebuild the accumulators and the ensemble logits inside ``region`` (padded coordinates).

        Returns the updated box of the logits (unpadded preprocessed coordinates), None when empty."""
        import torch

        case = self._case
        p = case["predictor"]
        n_folds = len(p.list_of_parameters)
        shape = case["padded"].shape[1:]
        k = p.label_manager.num_segmentation_heads
        if case["acc"] is None:
            case["acc"] = [torch.zeros((k, *shape), dtype=torch.half) for _ in range(n_folds)]
            case["logits"] = torch.zeros((k, *case["padded"][0][case["revert"]].shape), dtype=torch.half)
        per_fold = []
        touched = [(i, inter) for i, sl in enumerate(case["slicers"])
                   if (inter := _intersect(sl[1:], region)) is not None]
        with self._tile_runner() if self.lean else contextlib.nullcontext() as run:
            for f in range(n_folds):
                acc = case["acc"][f]
                acc[(slice(None), *region)] = 0
                # a lean session runs, and holds, one group of tiles at a time
                step = case["predictor"].tiles_per_step() if self.lean else max(len(touched), 1)
                for start in range(0, len(touched), step):
                    group = touched[start:start + step]
                    tiles = run(f, [i for i, _ in group]) if self.lean else [case["tiles"][f][i] for i, _ in group]
                    for (i, inter), tile in zip(group, tiles):
                        sl = case["slicers"][i]
                        local = tuple(slice(s.start - t.start, s.stop - t.start) for s, t in zip(inter, sl[1:]))
                        acc[(slice(None), *inter)] += tile[(slice(None), *local)]
                    del tiles
                per_fold.append(torch.div(acc[(slice(None), *region)], case["n_pred"][region]))
        # the region in unpadded coordinates
        revert = case["revert"]
        inner = _intersect(region, revert)
        if inner is None:
            return None
        src = tuple(slice(s.start - r.start, s.stop - r.start) for s, r in zip(inner, region))
        dst = tuple(slice(s.start - r.start, s.stop - r.start) for s, r in zip(inner, revert))
        pred = per_fold[0][(slice(None), *src)].clone()
        for extra in per_fold[1:]:
            pred += extra[(slice(None), *src)]
        if n_folds > 1:
            pred /= n_folds
        case["logits"][(slice(None), *dst)] = pred
        return dst

    def _finish(self, changed: tuple[slice, ...] | None) -> None:
        """Segmentation on the case's grid from the ensemble logits, then post-processing.

        ``changed`` is the box of logits (preprocessed coordinates) updated since the last call. When
        nnU-Net does not resample the case, the preprocessed segmentation is kept and only that box is
        converted again (the conversion is voxel-wise); otherwise nnU-Net's conversion runs on the whole case.
        """
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        from .inference.pipeline import _lesion_label
        from .inference.postprocessing import clicked_voxels, postprocess_with_stats

        case = self._case
        p = case["predictor"]
        props = case["properties"]
        logits = case["logits"]
        if tuple(logits.shape[1:]) == tuple(int(s) for s in props["shape_after_cropping_and_before_resampling"]):
            lm = p.label_manager
            if case["seg"] is None or changed is None:
                changed = tuple(slice(0, s) for s in logits.shape[1:])
                if case["seg"] is None:
                    dtype = np.uint8 if len(lm.foreground_labels) < 255 else np.uint16
                    case["seg"] = np.zeros(logits.shape[1:], dtype=dtype)
            part = lm.convert_logits_to_segmentation(logits[(slice(None), *changed)].clone())
            part = part.cpu().numpy() if hasattr(part, "cpu") else np.asarray(part)
            case["seg"][changed] = part
            full = np.zeros(props["shape_before_cropping"], dtype=case["seg"].dtype)
            crop = tuple(slice(int(lo), int(hi)) for lo, hi in props["bbox_used_for_cropping"])
            full[crop] = case["seg"]
            seg = full.transpose(p.plans_manager.transpose_backward)
        else:
            seg = convert_predicted_logits_to_segmentation_with_correct_shape(
                logits.clone(), p.plans_manager, p.configuration_manager, p.label_manager,
                props, return_probabilities=False)
        mask = (np.asarray(seg) == _lesion_label(p.dataset_json)).astype(np.uint8)
        st = case["settings"]
        if st.postprocess:
            mask, _ = postprocess_with_stats(mask, case["pet"], case["geometry"].spacing_zyx, st.min_voxels,
                                             st.suv_max, self.pipeline.min_volume_ml,
                                             keep=clicked_voxels(self._clicks, self.pipeline.keep_clicked),
                                             isocontour=st.isocontour)
        case["mask"] = mask
        case["lesions"] = None


# ------------------------------------------------------------------------------------------------ saving
#: Endings of the two interaction files :func:`save_interactions` writes beside a mask ``<folder>/<case>.<ext>``:
#: the autoPET V JSON (flat points in entry order, readable as a click file too) and our form (ids and order).
AUTOPET_V_SUFFIX = "_clicks.json"
INTERACTIONS_SUFFIX = "_interactions.json"


def interaction_paths(mask_path: PathLike) -> tuple[Path, Path]:
    """``(<folder>/<case>_clicks.json, <folder>/<case>_interactions.json)`` for a mask ``<folder>/<case>.<ext>``."""
    from .io import strip_image_extension

    mask = Path(mask_path)
    stem = strip_image_extension(mask.name)
    return mask.with_name(stem + AUTOPET_V_SUFFIX), mask.with_name(stem + INTERACTIONS_SUFFIX)


def save_interactions(interactions: Interactions, mask_path: PathLike,
                      inputs: Sequence[PathLike] = ()) -> tuple[Path, Path]:
    """Write a session's interactions beside its mask in both JSON forms, each atomically.

    Parameters
    ----------
    interactions : Interactions
        :attr:`Session.interactions`.
    mask_path : path-like
        The mask the files go beside (:func:`interaction_paths`).
    inputs : sequence of path-like
        Files never overwritten (the case's images).

    Returns
    -------
    (autopet_v, ours) : Path, Path
        ``<case>_clicks.json``: the autoPET V JSON, every voxel of every entry as a point in entry order (x, y, z);
        ``<case>_interactions.json``: our form with each entry's id, kind, plane and voxels, which reads back
        to the same interactions.
    """
    from .interactions import write_interactions

    challenge, ours = interaction_paths(mask_path)
    write_interactions(interactions, challenge, inputs, form="autopet-v")
    write_interactions(interactions, ours, inputs, form="quantif")
    return challenge, ours
