"""The trained model as an evaluation method (``method(case, clicks) -> mask``).

The model runs through the inference pipeline
(:class:`nnunet_quantif.inference.pipeline.QuantIFPipeline`): click heatmap from the step's clicks,
tracer routing, sliding window with the mirroring policy, resampling back and post-processing -- the
same path as ``quantif predict``. The pipeline loads each tracer's model once and is reused for
every case and step; the case's CT and PET arrays are read once per case (cached by
:class:`~nnunet_quantif.evaluation.cases.EvalCase`).

Steps of one case (:meth:`ModelMethod.predict_steps`): by default the steps of a case are predicted with an
interactive :class:`~nnunet_quantif.interactive.Session` opened at step 0, to which the clicks of steps 1, 2, ...
are added one by one (tumor click k, then background click k), so that the mask of step k is the session's
mask after the clicks of step k. A click re-runs only the sliding-window tiles it changes, and the session's
mask is the pipeline's for the same clicks. Where the session would not give the pipeline's masks, every step
is predicted in full instead (:attr:`ModelMethod.incremental_reason` says why, and it is logged):

- the ``budget`` mirroring policy chooses the axes from the time left at each step, while a session chooses
  them once per case;
- ``--accumulate fp32``: a session sums its tiles in float16, as nnU-Net does;
- ``--tile-batch`` or ``--compile``: the pipeline then runs several tiles per forward pass, a session one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

import numpy as np

from ..clicks import Clicks
from ..io import PathLike
from .cases import EvalCase

log = logging.getLogger(__name__)


class ModelMethod:
    """Evaluate the QuantIF model through the inference pipeline.

    Parameters
    ----------
    model_fdg, model_psma : path-like or None
        Trained nnU-Net model folders (at least one).
    folds : sequence of str or int, optional
        Folds to ensemble (None: every fold found in the folder).
    device : str, optional
        Torch device (the pipeline's default -- CUDA when available -- when None).
    tracer : str, optional
        How to route a case: None uses the case's known tracer (name prefix or CSV); ``'auto'`` lets
        the tracer classifier decide, as at challenge time.
    incremental : bool
        Predict the steps of a case with an interactive session (see the module docstring) where the model
        and options allow it; False predicts every step in full.
    lean : bool
        The session's memory-lean mode (``Session(lean=True)``): no stored tile logits, more tiles per click.
    **pipeline_kwargs
        Passed on to ``QuantIFPipeline`` (``mirroring``, ``postprocess``, ``tile_step_size``, ...).

    Attributes
    ----------
    last_result : CaseResult or None
        The pipeline's summary of the latest prediction (tracer, mirroring, timings).
    routed : dict of str to str
        The tracer each case predicted in this process was routed to, by case name.
    step_modes : dict of str to str
        How the steps of each case were predicted (``'session'`` or ``'full'``), by case name.
    """

    click_independent = False

    def __init__(self, model_fdg: PathLike | None = None, model_psma: PathLike | None = None,
                 folds: Sequence[str | int] | None = None, device: str | None = None, tracer: str | None = None,
                 incremental: bool = True, lean: bool = False, **pipeline_kwargs) -> None:
        from ..inference.pipeline import QuantIFPipeline

        self.pipeline = QuantIFPipeline(model_fdg, model_psma, folds=folds, device=device, **pipeline_kwargs)
        self.tracer = tracer
        self.incremental = bool(incremental)
        self.lean = bool(lean)
        self.last_result = None
        self.routed: dict[str, str] = {}
        self.step_modes: dict[str, str] = {}
        self._logged = False

    @property
    def incremental_reason(self) -> str | None:
        """Why the steps of a case are predicted in full rather than with a session; None when a session is used."""
        p = self.pipeline
        if hasattr(p, "model_set"):
            return "a model set is predicted in full at every step (its click rules and post-processing)"
        if not self.incremental:
            return "incremental prediction is off"
        budget = sorted(t for t, st in p.settings.items() if getattr(st.policy, "name", None) == "budget")
        if budget:
            return ("the 'budget' mirroring policy chooses the axes from the time left at each step "
                    f"({', '.join(budget)}), a session once per case")
        options = p.forward_options
        if options.get("accumulate") != "fp16":
            return f"a session sums its tiles in float16, not {options.get('accumulate')} (--accumulate)"
        if options.get("tile_batch") is not None or options.get("compile_network"):
            return "with --tile-batch or --compile the pipeline runs several tiles per forward pass, a session one"
        return None

    @classmethod
    def from_model_set(cls, models: PathLike, tracer: str | None = None, **options) -> ModelMethod:
        """The model set in folder ``models`` (:class:`~nnunet_quantif.model_set.ModelSetPipeline` with
        ``options``) as a method."""
        from ..model_set import ModelSetPipeline

        method = cls.__new__(cls)
        method.pipeline = ModelSetPipeline(models, **options)
        method.tracer = tracer
        method.incremental = False
        method.lean = False
        method.last_result = None
        method.routed = {}
        method.step_modes = {}
        method._logged = False
        return method

    def describe(self) -> str:
        """The settings that determine the predictions (model folders, folds, routing, mirroring)."""
        p = self.pipeline
        if hasattr(p, "model_set"):
            return f"{p.describe()} tracer={self.tracer or 'known'}"
        models = (f"model={p.model_dirs.get('any')}" if p.single_model
                  else f"fdg={p.model_dirs.get('fdg')} psma={p.model_dirs.get('psma')}")
        iso = {t: st.isocontour for t, st in p.settings.items() if st.postprocess and st.isocontour is not None}
        return (f"QuantIF model {models} folds={p.folds} "
                f"tracer={self.tracer or 'known'} mirroring={getattr(p.policy, 'name', p.policy)} "
                f"postprocess={p.do_postprocess}{'' if p.keep_clicked else ' clicked=remove'}"
                + (f" isocontour={iso}" if iso else ""))

    def predict_steps(self, case: EvalCase, clicks: Clicks,
                      steps: Sequence[int]) -> Iterator[tuple[int, np.ndarray, float]]:
        """Predict one case at the click ``steps``.

        Parameters
        ----------
        case : EvalCase
        clicks : Clicks
            All clicks of the case; step k uses ``clicks.first(k)``.
        steps : sequence of int
            The steps to predict (any order; predicted in increasing order).

        Yields
        ------
        (step, mask, seconds)
            The step, its mask ((z, y, x) uint8 0/1 on the case's grid) and the seconds it took: with a session,
            the update from the previous step yielded (the opening, with step 0's prediction, for the first).
        """
        reason = self.incremental_reason
        if not self._logged:
            if reason is None:
                log.info("evaluation steps: one session per case, each click re-runs the tiles it changes")
            else:
                log.info("evaluation steps: a full prediction at every step (%s)", reason)
            self._logged = True
        wanted = sorted({int(k) for k in steps})
        if reason is not None:
            self.step_modes[case.name] = "full"
            for k in wanted:
                t0 = time.perf_counter()
                mask = self(case, clicks.first(k))
                yield k, mask, time.perf_counter() - t0
            return
        yield from self._session_steps(case, clicks, wanted)

    def _session_steps(self, case: EvalCase, clicks: Clicks,
                       wanted: list[int]) -> Iterator[tuple[int, np.ndarray, float]]:
        """The steps of one case from a session: open at step 0, then click by click."""
        from ..interactive import Session

        session = Session(pipeline=self.pipeline, lean=self.lean)  # one per case: its tiles go with it
        self.step_modes[case.name] = "session"
        tumor, background = clicks.tumor_xyz(), clicks.background_xyz()
        t0 = time.perf_counter()
        mask = session.open(case.ct(), case.pet(), case.geometry, tracer=self.tracer or case.tracer,
                            case_name=case.name)
        self.routed[case.name] = session.tracer
        self.last_result = None
        step = 0
        for k in wanted:
            while step < k:
                if step < len(tumor):
                    mask = session.add_click(tumor[step], "tumor")
                if step < len(background):
                    mask = session.add_click(background[step], "background")
                step += 1
            yield k, np.array(mask, dtype=np.uint8), time.perf_counter() - t0
            t0 = time.perf_counter()

    def stroke_session(self, case: EvalCase):
        """An interactive session opened on ``case`` for the autoPET V stroke loop, and its round-0 mask; None where
        the session would not give the pipeline's masks (:attr:`incremental_reason`, then every round is predicted
        in full). Strokes are added with ``Session.add_stroke``, whose masks equal the pipeline's for the stroke
        voxels as clicks.

        Returns
        -------
        (Session, np.ndarray) or None
            The session and its (z, y, x) uint8 mask without interactions.
        """
        if self.incremental_reason is not None:
            self.step_modes[case.name] = "full"
            return None
        from ..interactive import Session

        session = Session(pipeline=self.pipeline, lean=self.lean)
        mask = session.open(case.ct(), case.pet(), case.geometry, tracer=self.tracer or case.tracer,
                            case_name=case.name)
        self.routed[case.name] = session.tracer
        self.step_modes[case.name] = "session"
        return session, np.array(mask, dtype=np.uint8)

    def __call__(self, case: EvalCase, clicks: Clicks) -> np.ndarray:
        result = self.pipeline.predict_arrays(case.ct(), case.pet(), case.geometry, clicks,
                                              tracer=self.tracer or case.tracer, case_name=case.name,
                                              source=str(case.pet_path))
        self.last_result = result
        self.routed[case.name] = result.tracer
        return result.mask


def model_method(model_fdg: PathLike | None = None, model_psma: PathLike | None = None,
                 folds: Sequence[str | int] | None = None, device: str | None = None, **kwargs) -> ModelMethod:
    """Build a :class:`ModelMethod` (see there)."""
    return ModelMethod(model_fdg, model_psma, folds, device, **kwargs)
