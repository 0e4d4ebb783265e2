"""The dock widget: model fields, "Load case", click layers, the lesion mask and table, "Save".

Layers (world frame (z, y, x) in mm, see :mod:`nnunet_quantif.napari.logic`):

* ``CT`` (grey) and ``PET`` (SUV, additive ``hot`` colormap), with the images' spacing as ``scale`` and origin
  as ``translate``;
* ``lesions``: a Labels layer, one value per lesion (the ids of the table and of the lesion CSV), updated in place
  after each click;
* ``tumor clicks`` and ``background clicks``: Points layers. Adding a point adds a click, deleting the latest
  click undoes it, any other change (an earlier point deleted, a point moved) replays the clicks (the strokes
  stay);
* ``tumor strokes`` and ``background strokes``: Shapes layers in path mode. A path drawn on the current slice is
  one stroke (its vertices' voxels joined by digital lines, :func:`~.logic.path_to_stroke`), added with
  :meth:`Session.add_stroke`; deleting the latest stroke undoes it, and "Undo" removes the latest click or the
  whole latest stroke.

Model loading, reading the case, the first prediction and replaying a click file run in a napari thread worker
with a progress indicator; single clicks update synchronously.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from functools import partial
from pathlib import Path

import napari
import numpy as np
from napari.layers.base._base_constants import ActionType
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..devices import DEVICES
from ..errors import ClickError, QuantIFError
from ..inference.options import PipelineOptions
from ..inference.routing import TRACER_CHOICES
from ..interactive import CLICK_KINDS, Session
from ..server.client import QuantIFClient, RemoteSession
from .logic import (
    TABLE_COLUMNS,
    Click,
    ModelSettings,
    SavedFiles,
    apply_click_update,
    build_pipeline,
    clicks_world,
    layer_transform,
    lesion_centre_world,
    lesion_label_map,
    path_to_stroke,
    plan_click_update,
    points_order,
    read_case,
    resume_clicks,
    save_session,
    strokes_world,
    table_rows,
    world_to_voxel,
)

#: Layer names.
CT_LAYER, PET_LAYER, LABELS_LAYER = "CT", "PET", "lesions"
POINTS_LAYERS: dict[str, str] = {"tumor": "tumor clicks", "background": "background clicks"}
POINT_COLOURS: dict[str, str] = {"tumor": "red", "background": "deepskyblue"}
STROKE_LAYERS: dict[str, str] = {"tumor": "tumor strokes", "background": "background strokes"}

#: Display windows: CT in HU (soft tissue), PET in SUV (upper limit at least this).
CT_WINDOW_HU: tuple[float, float] = (-160.0, 240.0)
PET_MIN_UPPER_SUV: float = 5.0

#: Milliseconds without further changes before a moved point replays the clicks (a drag sends many events).
MOVE_DEBOUNCE_MS = 300


class QuantIFWidget(QWidget):
    """Click-guided PET/CT lesion segmentation in napari.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        Injected by napari.

    Attributes
    ----------
    session : Session or None
        The interactive session (models loaded once, kept while the model fields do not change).
    order : list of (kind, (z, y, x))
        The clicks, oldest first.
    pipeline_factory : callable or None
        When set, makes the session's pipeline instead of the model fields (for embedding and tests).
    base_options : PipelineOptions or None
        ``quantif view``'s pipeline options; the fields override their model options.
    ignore_ct_mismatch : bool
        Use a DICOM CT that does not match the PET (``quantif view --ignore-ct-mismatch``).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session: Session | None = None
        self.order: list[Click] = []
        self.pipeline_factory: Callable[[], object] | None = None
        self.base_options: PipelineOptions | None = None
        self.ignore_ct_mismatch = False
        self.ct_path: str | None = None
        self.pet_path: str | None = None
        self.worker = None
        self._settings_of_session: ModelSettings | None = None
        self._syncing = False
        self._layers: dict[str, object] = {}
        self._move_timers: dict[str, QTimer] = {}
        self._build_ui()

    # ------------------------------------------------------------------ UI
    def _path_row(self, form: QFormLayout, label: str, folder: bool) -> QLineEdit:
        edit = QLineEdit()
        button = QPushButton("…")
        button.setFixedWidth(28)

        def browse() -> None:
            if folder:
                path = QFileDialog.getExistingDirectory(self, label, edit.text())
            else:
                path, _ = QFileDialog.getOpenFileName(self, label, edit.text())
            if path:
                edit.setText(path)

        button.clicked.connect(browse)
        row = QHBoxLayout()
        row.addWidget(edit)
        row.addWidget(button)
        form.addRow(label, row)
        return edit

    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        models = QGroupBox("models")
        form = QFormLayout(models)
        self.model_fdg_edit = self._path_row(form, "FDG model", True)
        self.model_psma_edit = self._path_row(form, "PSMA model", True)
        self.results_edit = self._path_row(form, "or results", True)
        self.dataset_fdg_edit, self.dataset_psma_edit = QLineEdit(), QLineEdit()
        ids = QHBoxLayout()
        for text, edit in (("FDG", self.dataset_fdg_edit), ("PSMA", self.dataset_psma_edit)):
            edit.setPlaceholderText(f"{text} dataset id")
            ids.addWidget(edit)
        form.addRow("dataset ids", ids)
        self.tracer_combo = QComboBox()
        self.tracer_combo.addItems(list(TRACER_CHOICES))
        form.addRow("tracer", self.tracer_combo)
        self.tracer_weights_edit = self._path_row(form, "tracer weights", True)
        self.folds_edit = QLineEdit(ModelSettings().folds)
        form.addRow("folds", self.folds_edit)
        self.device_combo = QComboBox()
        self.device_combo.setEditable(True)
        self.device_combo.addItems(["auto", *(d for d in DEVICES if d != "auto")])
        form.addRow("device", self.device_combo)
        layout.addWidget(models)

        remote = QGroupBox("or a server (quantif serve)")
        form = QFormLayout(remote)
        self.server_url_edit = QLineEdit()
        self.server_url_edit.setPlaceholderText("http://host:8000 (empty: the models above, here)")
        form.addRow("server URL", self.server_url_edit)
        self.server_key_edit = QLineEdit()
        self.server_key_edit.setEchoMode(QLineEdit.Password)
        form.addRow("API key", self.server_key_edit)
        layout.addWidget(remote)

        case = QGroupBox("case")
        form = QFormLayout(case)
        self.ct_edit = self._path_row(form, "CT", False)
        self.pet_edit = self._path_row(form, "PET", False)
        self.load_button = QPushButton("Load case")
        self.load_button.clicked.connect(lambda: self.load_case())
        form.addRow(self.load_button)
        layout.addWidget(case)

        buttons = QHBoxLayout()
        self.undo_button = QPushButton("Undo")
        self.undo_button.clicked.connect(self.undo)
        self.reset_button = QPushButton("Reset")
        self.reset_button.clicked.connect(self.reset)
        self.resume_button = QPushButton("Load clicks…")
        self.resume_button.clicked.connect(self._resume_dialog)
        self.save_button = QPushButton("Save…")
        self.save_button.clicked.connect(self._save_dialog)
        for b in (self.undo_button, self.reset_button, self.resume_button, self.save_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)

        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # busy indicator
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.status = QLabel("load a case")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels([h for h, _, _ in TABLE_COLUMNS])
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.itemSelectionChanged.connect(self._on_row_selected)
        layout.addWidget(self.table)
        self._set_busy(False)

    # ------------------------------------------------------------------ settings
    def model_settings(self) -> ModelSettings:
        """The model fields."""
        device = self.device_combo.currentText().strip()
        return ModelSettings(self.model_fdg_edit.text(), self.model_psma_edit.text(), self.results_edit.text(),
                             self.dataset_fdg_edit.text(), self.dataset_psma_edit.text(),
                             self.tracer_combo.currentText(), self.tracer_weights_edit.text(), self.folds_edit.text(),
                             "" if device == "auto" else device)

    def set_model_settings(self, settings: ModelSettings) -> None:
        """Fill the model fields."""
        for edit, value in ((self.model_fdg_edit, settings.model_fdg), (self.model_psma_edit, settings.model_psma),
                            (self.results_edit, settings.results), (self.dataset_fdg_edit, settings.dataset_fdg),
                            (self.dataset_psma_edit, settings.dataset_psma),
                            (self.tracer_weights_edit, settings.tracer_weights), (self.folds_edit, settings.folds)):
            edit.setText(value)
        self.tracer_combo.setCurrentText(settings.tracer)
        self.device_combo.setCurrentText(settings.device or "auto")

    @property
    def busy(self) -> bool:
        """Whether a thread worker (loading, first prediction, replay) is running."""
        return self.worker is not None

    def _set_busy(self, busy: bool, message: str | None = None) -> None:
        self.progress.setVisible(busy)
        has_case = self.session is not None and not busy
        self.load_button.setEnabled(not busy)
        for b in (self.undo_button, self.reset_button, self.resume_button, self.save_button):
            b.setEnabled(has_case)
        if message:
            self.status.setText(message)

    # ------------------------------------------------------------------ long work in a thread worker
    def _start(self, job: Callable[[], Generator[str, None, object]], on_done: Callable[[object], None],
               desc: str):
        """Run ``job`` (a generator yielding status lines, returning a result) in a napari thread worker."""
        if self.busy:
            raise QuantIFError("busy: wait until the current job has finished")
        # connecting 'errored' keeps napari from re-raising the error in the main thread; napari still
        # shows it as a notification
        worker = create_worker(job, _progress={"desc": desc},
                               _connect={"yielded": lambda text: self.status.setText(str(text)),
                                         "returned": on_done, "errored": self._on_error,
                                         "finished": self._on_finished}, _start_thread=False)
        self.worker = worker
        self._set_busy(True, desc)
        worker.start()
        return worker

    def _on_error(self, error: BaseException) -> None:
        self.status.setText(f"error: {error}")

    def _on_finished(self) -> None:
        self.worker = None
        self._set_busy(False)

    def load_case(self, ct: str | None = None, pet: str | None = None, clicks: str | None = None):
        """Read a case, load the models (once) and predict step 0 in a thread worker, then show the layers.

        Parameters
        ----------
        ct, pet : str, optional
            Image files (NIfTI, MHA) or DICOM series folders; default: the fields.
        clicks : str, optional
            A click JSON to resume from.

        Returns
        -------
        The napari worker (started).
        """
        if ct is not None:
            self.ct_edit.setText(str(ct))
        if pet is not None:
            self.pet_edit.setText(str(pet))
        ct, pet = self.ct_edit.text().strip(), self.pet_edit.text().strip()
        settings = self.model_settings()
        remote = self.remote_settings()
        if remote is not None:
            return self._load_remote(ct, pet, clicks, settings, remote)
        session = self.session if settings == self._settings_of_session else None
        if isinstance(session, RemoteSession):
            session = None

        def job() -> Generator[str, None, object]:
            nonlocal session
            if session is None:
                pipeline = self.pipeline_factory() if self.pipeline_factory else build_pipeline(settings,
                                                                                                self.base_options)
            else:
                pipeline = session.pipeline
            yield f"reading {Path(pet).name}"
            ct_a, pet_a, geometry, name = read_case(
                ct, pet, pipeline.nonfinite, ignore_ct_mismatch=self.ignore_ct_mismatch)
            if session is None:
                yield "loading the models"
                session = Session(pipeline=pipeline)
            yield "predicting without clicks"
            session.open(ct_a, pet_a, geometry, tracer=settings.tracer, case_name=name)
            order: list[Click] = []
            if clicks:
                yield f"replaying {Path(clicks).name}"
                order = resume_clicks(session, clicks)
            return session, ct_a, pet_a, order, (ct, pet)

        return self._start(job, partial(self._on_loaded, settings), "QuantIF: loading the case")

    def remote_settings(self) -> tuple[str, str] | None:
        """The server URL and API key of the server fields (None: no server, the models run here)."""
        url = self.server_url_edit.text().strip()
        return (url, self.server_key_edit.text().strip()) if url else None

    def _load_remote(self, ct: str, pet: str, clicks: str | None, settings: ModelSettings, remote: tuple[str, str]):
        """:meth:`load_case` on a server: the case is read here, uploaded, and clicks go to the server."""
        previous = self.session if isinstance(self.session, RemoteSession) else None

        def job() -> Generator[str, None, object]:
            yield f"reading {Path(pet).name}"
            ct_a, pet_a, geometry, name = read_case(ct, pet, "raise", ignore_ct_mismatch=self.ignore_ct_mismatch)
            session = RemoteSession(QuantIFClient(*remote))
            yield f"uploading to {remote[0]}; the server predicts without clicks"
            session.open(ct_a, pet_a, geometry, tracer=settings.tracer, case_name=name)
            if previous is not None:
                previous.close()
            order: list[Click] = []
            if clicks:
                yield f"replaying {Path(clicks).name}"
                order = resume_clicks(session, clicks)
            return session, ct_a, pet_a, order, (ct, pet)

        return self._start(job, partial(self._on_loaded, settings), "QuantIF: loading the case on the server")

    def _on_loaded(self, settings: ModelSettings, result: tuple) -> None:
        session, ct, pet, order, (self.ct_path, self.pet_path) = result
        self.session, self._settings_of_session, self.order = session, settings, list(order)
        self._show_case(ct, pet)
        self._refresh()

    def resume(self, path: str):
        """Replay a click JSON (the challenge format, e.g. from :meth:`save`) on the open case, in a worker."""
        session = self._need_session()

        def job() -> Generator[str, None, object]:
            yield f"replaying {Path(path).name}"
            return resume_clicks(session, path)

        def done(order: list[Click]) -> None:
            self.order = order
            self._sync_points()
            self._sync_strokes()
            self._refresh()

        return self._start(job, done, "QuantIF: replaying clicks")

    # ------------------------------------------------------------------ layers
    def layer(self, name: str):
        """One of the widget's layers by name (``CT``, ``PET``, ``lesions``, ``tumor clicks``, ...)."""
        return self._layers[name]

    def _show_case(self, ct: np.ndarray, pet: np.ndarray) -> None:
        for layer in self._layers.values():
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        geometry = self.session.geometry
        scale, translate = layer_transform(geometry)
        kw = dict(scale=scale, translate=translate)
        upper = max(PET_MIN_UPPER_SUV, float(np.percentile(pet[::2, ::2, ::2], 99.9)))
        self._layers = {
            CT_LAYER: self.viewer.add_image(ct, name=CT_LAYER, colormap="gray", contrast_limits=CT_WINDOW_HU, **kw),
            PET_LAYER: self.viewer.add_image(pet, name=PET_LAYER, colormap="hot", blending="additive",
                                             contrast_limits=(0.0, upper), **kw),
            LABELS_LAYER: self.viewer.add_labels(lesion_label_map(self.session.mask), name=LABELS_LAYER,
                                                 opacity=0.6, **kw),
        }
        size = 2.5 * max(geometry.spacing)
        for kind in CLICK_KINDS:  # rings, so that the voxels under a click stay visible
            layer = self.viewer.add_points(clicks_world(self.order, kind, geometry), ndim=3, name=POINTS_LAYERS[kind],
                                           face_color="transparent", border_color=POINT_COLOURS[kind],
                                           border_width=0.25, size=size)
            layer.events.data.connect(partial(self._on_points, kind))
            self._layers[POINTS_LAYERS[kind]] = layer
            timer = QTimer(self)
            timer.setSingleShot(True)
            timer.setInterval(MOVE_DEBOUNCE_MS)
            timer.timeout.connect(partial(self._update_from_layer, kind))
            self._move_timers[kind] = timer
        for kind in CLICK_KINDS:
            layer = self.viewer.add_shapes(ndim=3, name=STROKE_LAYERS[kind], edge_color=POINT_COLOURS[kind],
                                           face_color="transparent", edge_width=max(geometry.spacing[:2]) * 0.5)
            layer.events.data.connect(partial(self._on_shapes, kind))
            self._layers[STROKE_LAYERS[kind]] = layer
        self._sync_strokes()
        tumor = self._layers[POINTS_LAYERS["tumor"]]
        self.viewer.layers.selection.active = tumor
        tumor.mode = "add"
        self.viewer.reset_view()

    def _sync_points(self) -> None:
        """Make the Points layers show the session's clicks (without triggering updates)."""
        geometry = self.session.geometry
        self._syncing = True
        try:
            for kind in CLICK_KINDS:
                self._layers[POINTS_LAYERS[kind]].data = clicks_world(self.order, kind, geometry)
        finally:
            self._syncing = False

    def _sync_strokes(self) -> None:
        """Make the Shapes layers show the session's strokes (without triggering updates)."""
        geometry, inter = self.session.geometry, self.session.interactions
        self._syncing = True
        try:
            for kind in CLICK_KINDS:
                layer = self._layers[STROKE_LAYERS[kind]]
                layer.data = []
                paths = strokes_world(inter, kind, geometry)
                if paths:
                    layer.add_paths(paths, edge_color=POINT_COLOURS[kind])
        finally:
            self._syncing = False

    def add_stroke_path(self, kind: str, vertices_world: np.ndarray) -> np.ndarray:
        """Add a stroke drawn as a path (world mm, (z, y, x), on one slice) and return the session's mask."""
        session = self._need_session()
        if self.busy:
            raise ClickError("busy: wait until the current job has finished")
        voxels, axis = path_to_stroke(vertices_world, session.geometry)
        return session.add_stroke(voxels, kind, axis)

    def _on_shapes(self, kind: str, event) -> None:
        """A path drawn on a stroke layer adds a stroke; deleting the latest stroke undoes it; any other change
        is taken back (strokes are removed with Undo)."""
        if self._syncing or not self._layers:
            return
        action = getattr(event, "action", None)
        if action not in (ActionType.ADDED, ActionType.REMOVED):
            if action == ActionType.CHANGED:
                show_warning("QuantIF: strokes cannot be moved; undo and draw again")
                self._sync_strokes()
            return
        layer = self._layers[STROKE_LAYERS[kind]]
        try:
            session = self._need_session()
            mine = [e for e in session.interactions if e.kind == "stroke" and e.label == kind]
            if action == ActionType.ADDED and len(layer.data) > len(mine):
                for vertices in layer.data[len(mine):]:
                    self.add_stroke_path(kind, np.asarray([layer.data_to_world(v) for v in np.asarray(vertices)]))
            elif action == ActionType.REMOVED:
                last = session.interactions[-1] if len(session.interactions) else None
                if (len(layer.data) == len(mine) - 1 and last is not None and last.kind == "stroke"
                        and last.label == kind):
                    session.undo()
                else:
                    raise ClickError("only the latest stroke can be deleted; use Undo")
        except QuantIFError as e:
            show_warning(f"QuantIF: {e}")
        self._fix_order()
        self._sync_points()
        self._sync_strokes()
        self._refresh()

    def _on_points(self, kind: str, event) -> None:
        if self._syncing or not self._layers:
            return
        action = getattr(event, "action", None)
        if action == ActionType.CHANGED:  # a drag: wait until it ends
            self._move_timers[kind].start()
        elif action in (ActionType.ADDED, ActionType.REMOVED):
            self._update_from_layer(kind)

    def _update_from_layer(self, kind: str) -> None:
        """Bring the session in line with the Points layer of ``kind``."""
        layer = self._layers[POINTS_LAYERS[kind]]
        try:
            if self.busy:
                raise ClickError("busy: wait until the current job has finished")
            session = self._need_session()
            zyx = [world_to_voxel(layer.data_to_world(p), session.geometry) for p in layer.data]
            update = plan_click_update(self.order, kind, zyx)
            apply_click_update(session, update)
            self.order = update.order
        except QuantIFError as e:
            show_warning(f"QuantIF: {e}")
            self._fix_order()
            if self.session is not None:
                self._sync_points()
        else:
            if update.action == "replay":
                self._sync_points()
        self._refresh()

    def _fix_order(self) -> None:
        """Keep ``order`` equal to the session's point entries (the strokes' voxels are not points)."""
        if self.session is not None:
            self.order = points_order(self.session.interactions)

    # ------------------------------------------------------------------ buttons
    def _need_session(self) -> Session:
        if self.session is None:
            raise ClickError("no case is loaded: load a case first")
        return self.session

    def undo(self) -> None:
        """Undo the latest click, the whole latest stroke, or a reset."""
        try:
            session = self._need_session()
            session.undo()
        except QuantIFError as e:
            show_warning(f"QuantIF: {e}")
            return
        self._fix_order()
        self._sync_points()
        self._sync_strokes()
        self._refresh()

    def reset(self) -> None:
        """Remove every click (undoable)."""
        try:
            self._need_session().reset()
        except QuantIFError as e:
            show_warning(f"QuantIF: {e}")
            return
        self.order = []
        self._sync_points()
        self._sync_strokes()
        self._refresh()

    def save(self, mask_path: str) -> SavedFiles:
        """Write the mask (input geometry), the interactions as the autoPET V JSON and in our form, and the lesion
        CSV (:func:`~.logic.save_session`)."""
        files = save_session(self._need_session(), mask_path, inputs=(self.ct_path, self.pet_path))
        self.status.setText(f"saved {files.mask}, {files.clicks.name}, {files.interactions.name}, "
                            f"{files.lesions.name}")
        return files

    def _save_dialog(self) -> None:
        start = str(Path(self.pet_path or ".").parent / "mask.nii.gz")
        path, _ = QFileDialog.getSaveFileName(self, "Save mask (clicks and lesion CSV beside it)", start,
                                              "Images (*.nii.gz *.nii *.mha)")
        if path:
            try:
                files = self.save(path)
            except (QuantIFError, OSError) as e:
                show_error(f"QuantIF: {e}")
            else:
                show_info(f"QuantIF: saved {files.mask}")

    def _resume_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Click file to resume", str(Path(self.pet_path or ".").parent),
                                              "Click JSON (*.json)")
        if path:
            self.resume(path)

    # ------------------------------------------------------------------ mask and table
    def _refresh(self) -> None:
        """Update the Labels layer in place and the lesion table from the session."""
        session = self.session
        if session is None or LABELS_LAYER not in self._layers:
            return
        labels_layer = self._layers[LABELS_LAYER]
        labels = lesion_label_map(session.mask)
        if labels.shape == labels_layer.data.shape and labels.dtype == labels_layer.data.dtype:
            labels_layer.data[...] = labels
            labels_layer.refresh()
        else:
            labels_layer.data = labels
        stats = session.lesions
        self.table.blockSignals(True)
        try:
            self.table.clearSelection()
            rows = table_rows(stats)
            self.table.setRowCount(len(rows))
            for i, row in enumerate(rows):
                for j, text in enumerate(row):
                    item = QTableWidgetItem(text)
                    item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
                    self.table.setItem(i, j, item)
        finally:
            self.table.blockSignals(False)
        u = session.last_update
        self.status.setText(f"{session.tracer.upper()}: {stats.summary_line()}"
                            + (f"; {u.kind} {u.seconds:.2f} s ({u.tiles_run}/{u.tiles_total} tiles)" if u else ""))

    def _on_row_selected(self) -> None:
        rows = {i.row() for i in self.table.selectedIndexes()}
        if len(rows) == 1 and self.session is not None:
            self.centre_on_lesion(rows.pop())

    def centre_on_lesion(self, row: int) -> np.ndarray:
        """Move the slice and the camera to the centroid of the table's row ``row``; returns the world point."""
        session = self._need_session()
        lesion = session.lesions.lesions[row]
        world = lesion_centre_world(lesion, session.geometry)
        self.viewer.dims.set_point(range(3), tuple(float(v) for v in world))
        camera = self.viewer.scene.camera if hasattr(self.viewer, "scene") else self.viewer.camera  # napari >= 0.9
        camera.center = tuple(float(v) for v in world)
        self._layers[LABELS_LAYER].selected_label = lesion.label
        return world
