"""Readable reports (``quantif report``): one self-contained HTML page for a case or for a response assessment.

The page needs nothing outside itself: the style sheet is inline, every image is a PNG in a ``data:`` URI, there
is no script and no link to another host. Every text taken from a file or a folder name is HTML-escaped.

**Case report** (:func:`build_case_report`, :func:`render_case_html`) of a case folder as
:func:`~nnunet_quantif.response.read_case` reads it (``ct``, ``pet`` in SUVbw, ``mask``, optional ``liver`` and
``case.json``), with these files recognised beside them when present (a missing one is shown as absent):

* the clicks used: ``clicks.json``, else the one ``*_clicks.json`` (what ``quantif session``'s napari widget saves
  beside a mask; the file ``quantif predict --clicks`` reads), either JSON form of :mod:`nnunet_quantif.clicks`;
* a saved lesion table: ``lesions.csv``, else the one ``*_lesions.csv`` (``quantif predict --stats``, the widget's
  save), compared with the measurement of the mask in the folder;
* the model: a model folder, model set or imported release named by ``case.json``'s ``model`` (relative to the
  case folder) or given to :func:`build_case_report`, described as ``quantif model info`` does, and a
  ``provenance.json`` in the case folder.

The page shows the coronal and sagittal PET maximum-intensity projections with every lesion outlined and
numbered by its lesion id (:func:`~nnunet_quantif.quantify.label_lesions`), the clicks and the liver sphere; the
lesion table (the values of ``quantif stats`` on the folder's PET, in SUVbw, and SUL = SUVbw x the SUL factor
when ``case.json`` gives sex, height and weight); the PERCIST liver reference
(:func:`~nnunet_quantif.liver.liver_reference`, in SUL when known) with its quality flag; the model; the clicks.

**Response report** (:func:`build_response_report`, :func:`render_response_html`) of a ``quantif response``
output folder (``response.json``, ``lesions.csv``) and the two case folders that ``response.json`` names (or that
are given): both coronal MIPs side by side, each row of the lesion table numbered once, so that a matched
baseline lesion and its follow-up lesion carry the same number; new and disappeared lesions are marked; the
category with the numbers that decided it.

Arrays are (z, y, x). A MIP is shown with the head up and the physical aspect ratio; the coronal view shows the
image's x axis left to right (patient right on the left for LPS images), the sagittal view its y axis.
"""

from __future__ import annotations

import base64
import csv
import html
import io as _io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputFileError, QuantIFError
from .io import Geometry, PathLike, find_image, read_pet, write_text

if TYPE_CHECKING:
    from .clicks import Clicks
    from .liver import LiverReference
    from .quantify import CaseStats
    from .response import TimePoint

#: Case-folder file names the report looks for besides :func:`~nnunet_quantif.response.read_case`'s.
CLICKS_NAME = "clicks.json"
CLICKS_PATTERN = "*_clicks.json"
LESIONS_NAME = "lesions.csv"
LESIONS_PATTERN = "*_lesions.csv"
PROVENANCE_NAME = "provenance.json"
#: ``case.json`` keys the report reads (besides ``tracer``, ``sex``, ``height_m``, ``weight_kg``).
CASE_NAME_KEY = "case"
MODEL_KEY = "model"
#: Endings accepted for the report file.
REPORT_ENDINGS = (".html", ".htm")
#: Relative tolerance of the saved lesion table against the measurement.
SAVED_TABLE_RTOL = 1e-6

#: Outline and label colours of the MIPs.
LESION_COLOUR = "#d62728"
MATCHED_COLOUR = "#ff7f0e"
NEW_COLOUR = "#d62728"
DISAPPEARED_COLOUR = "#1f77b4"
LIVER_COLOUR = "#2ca02c"
TUMOR_CLICK_COLOUR = "#9467bd"
BACKGROUND_CLICK_COLOUR = "#17becf"

_CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:22px 0 6px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:13px;margin:4px 0}
td,th{border:1px solid #bbb;padding:3px 7px;text-align:right}th{background:#eee}
td.t,th.t{text-align:left}.absent{color:#888;font-style:italic}.flag{color:#b00;font-weight:bold}
.category{font-size:28px;font-weight:bold;margin:6px 0}.small{font-size:12px;color:#555}
img{max-width:100%;border:1px solid #ddd}ul{margin:4px 0}
"""


class ReportError(QuantIFError):
    """A report cannot be made (a folder that is no case or response folder, a response folder without cases)."""


def _e(value: object) -> str:
    """HTML-escaped text of ``value`` (quotes included)."""
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 3) -> str:
    """A number for a table cell: ``digits`` decimals, '' for None, 'n/a' for NaN."""
    if value is None or value == "":
        return ""
    value = float(value)
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def _cell(value: float | None, digits: int = 3) -> str:
    """A numeric ``<td>`` with the rounded value shown and the full value (``repr``) in ``data-value``."""
    if value is None or value == "":
        return "<td></td>"
    return f'<td data-value="{_e(repr(float(value)))}">{_e(_num(value, digits))}</td>'


# --------------------------------------------------------------------------- MIPs


@dataclass(frozen=True)
class Marker:
    """A label on a MIP: ``text`` next to the voxel ``zyx`` (array order, may be fractional), in ``colour``; with
    ``symbol`` (a matplotlib marker such as '+') a point drawn at the voxel instead of a text."""

    text: str
    zyx: tuple[float, float, float]
    colour: str
    symbol: str | None = None


@dataclass(frozen=True)
class Outline:
    """Voxels (boolean (z, y, x) mask) outlined on a MIP in ``colour``."""

    mask: np.ndarray
    colour: str
    width: float = 1.0


def _view(volume: np.ndarray, axis: int, z_up: bool) -> np.ndarray:
    """Maximum over ``axis`` (1: coronal, (z, x); 2: sagittal, (z, y)); rows flipped so that the head is up
    when the image's z runs towards the feet."""
    mip = np.asarray(volume).max(axis=axis)
    return mip if z_up else np.flip(mip, axis=0)


def mip_panel(ax, pet: np.ndarray, geometry: Geometry, *, axis: int = 1, outlines: Sequence[Outline] = (),
              markers: Sequence[Marker] = (), title: str = "", vmax: float | None = None) -> None:
    """Draw a PET MIP with outlines and labels on a matplotlib axes.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    pet : np.ndarray, shape (z, y, x)
        PET (any units); shown inverted grey from 0 to ``vmax`` (default: its 99.5th percentile, at least 1).
    geometry : Geometry
        The PET grid (spacing for the aspect ratio, direction for head-up).
    axis : {1, 2}
        1: coronal (max over y), 2: sagittal (max over x).
    outlines, markers : sequences
        Drawn over the MIP; a marker's position is projected as the voxels are.
    """
    z_up = geometry.direction[8] >= 0
    image = _view(pet, axis, z_up)
    if vmax is None:
        vmax = max(float(np.percentile(image, 99.5)), 1.0)
    spacing = geometry.spacing_zyx
    ax.imshow(image, cmap="gray_r", vmin=0.0, vmax=vmax, origin="lower", aspect=spacing[0] / spacing[3 - axis],
              interpolation="nearest")
    for outline in outlines:
        if outline.mask.any():
            ax.contour(_view(outline.mask, axis, z_up).astype(np.float32), levels=[0.5], colors=[outline.colour],
                       linewidths=outline.width)
    nz = pet.shape[0]
    for m in sorted(markers, key=lambda m: m.symbol is None):  # points first, labels over them
        row = m.zyx[0] if z_up else nz - 1 - m.zyx[0]
        col = m.zyx[3 - axis]
        if m.symbol is not None:
            ax.plot([col], [row], linestyle="none", marker=m.symbol, color=m.colour, markersize=7, mew=1.6)
            continue
        ax.annotate(m.text, (col, row), xytext=(4, 4), textcoords="offset points", color=m.colour, fontsize=9,
                    fontweight="bold", ha="left", va="bottom",
                    bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "alpha": 0.75, "edgecolor": "none"})
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def figure_png(panels: Sequence[dict], *, height_in: float = 5.0, dpi: int = 100) -> bytes:
    """Render MIP panels side by side and return the PNG bytes.

    Parameters
    ----------
    panels : sequence of dict
        Keyword arguments of :func:`mip_panel` (``pet``, ``geometry``, ...) per panel, left to right.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    widths = []
    for p in panels:
        g: Geometry = p["geometry"]
        axis = p.get("axis", 1)
        extent_z = g.shape[0] * g.spacing_zyx[0]
        extent_w = g.shape[3 - axis] * g.spacing_zyx[3 - axis]
        widths.append(max(extent_w / extent_z, 0.2))
    fig = Figure(figsize=(height_in * sum(widths) + 0.4 * len(panels), height_in + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False, gridspec_kw={"width_ratios": widths})[0]
    for ax, p in zip(axes, panels):
        mip_panel(ax, **p)
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="{png_data_uri(png)}">'


# --------------------------------------------------------------------------- case report


@dataclass
class CaseReport:
    """Everything a case report shows (:func:`build_case_report`).

    Attributes
    ----------
    name : str
        Case name (``case.json``'s ``case``, else the folder name).
    stats : CaseStats
        ``quantif stats`` of the mask on the folder's PET (SUVbw).
    sul_factor : float or None
        SUL = SUVbw x this factor (None: sex, height or weight unknown).
    liver : LiverReference or None
        The PERCIST liver reference in ``liver_units`` (None: ``liver_note`` says why).
    clicks : Clicks or None
        The clicks used (None: ``clicks_note`` says why).
    model_lines : list of str
        The model and its provenance, one line each (empty: none recorded).
    files : dict
        File role -> path found, or None when absent.
    """

    folder: Path
    name: str
    stats: CaseStats
    geometry: Geometry
    pet_suv: np.ndarray
    labels: np.ndarray
    sul_factor: float | None
    liver: LiverReference | None
    liver_units: str
    liver_note: str
    clicks: Clicks | None
    clicks_note: str
    saved_table_note: str
    model_lines: list[str]
    files: dict[str, Path | None]
    meta: dict = field(default_factory=dict)


def _one_file(folder: Path, name: str, pattern: str) -> tuple[Path | None, str]:
    """``folder/name`` if it is a file, else the one file matching ``pattern``; (None, why) otherwise."""
    if (folder / name).is_file():
        return folder / name, ""
    found = sorted(p for p in folder.glob(pattern) if p.is_file())
    if len(found) == 1:
        return found[0], ""
    if len(found) > 1:
        return None, f"several files ({', '.join(p.name for p in found)}), none chosen; name one {name}"
    return None, ""


def _read_saved_table(path: Path, stats) -> str:
    """Compare a saved per-lesion CSV with ``stats``: a sentence saying whether it agrees."""
    from .quantify import CSV_COLUMNS

    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        return f"{path.name}: unreadable ({e})"
    if not rows or any(c not in rows[0] for c in ("lesion", "mtv_ml", "suv_max", "suv_mean", "suv_peak")):
        if not rows and stats.n_lesions == 0:
            return f"{path.name}: no lesions, as the mask in this folder"
        return f"{path.name}: not a lesion table (columns {', '.join(CSV_COLUMNS[:7])}...)"
    if len(rows) != stats.n_lesions:
        return (f"{path.name}: {len(rows)} lesion(s), but the mask in this folder has {stats.n_lesions}: it was "
                "saved for another mask")
    for row, lesion in zip(rows, stats.lesions):
        for key in ("mtv_ml", "suv_max", "suv_mean", "suv_peak"):
            try:
                saved = float(row[key])
            except (TypeError, ValueError):
                return f"{path.name}: lesion {row.get('lesion')}: {key} {row.get(key)!r} is not a number"
            if not math.isclose(saved, getattr(lesion, key), rel_tol=SAVED_TABLE_RTOL, abs_tol=1e-9):
                return (f"{path.name}: lesion {lesion.label} {key} {saved:g} differs from the measurement "
                        f"{getattr(lesion, key):g} (another mask or PET)")
    return f"{path.name}: agrees with the measurement below ({len(rows)} lesion(s))"


def _model_lines(folder: Path, model: PathLike | None, meta: dict) -> tuple[list[str], Path | None]:
    """The model's description (``quantif model info``) and the case folder's ``provenance.json``."""
    lines: list[str] = []
    model_path = None
    if model is not None:
        model_path = Path(model)
    elif meta.get(MODEL_KEY):
        model_path = Path(str(meta[MODEL_KEY]))
        if not model_path.is_absolute():
            model_path = folder / model_path
    if model_path is not None:
        from .releases.info import format_info, model_info

        try:
            lines += format_info(model_info(model_path)).splitlines()
        except (QuantIFError, OSError, ValueError) as e:
            lines.append(f"{model_path}: cannot describe the model ({e})")
    prov = folder / PROVENANCE_NAME
    if prov.is_file():
        try:
            record = json.loads(prov.read_text())
        except (OSError, ValueError) as e:
            lines.append(f"{prov.name}: unreadable ({e})")
        else:
            if isinstance(record, dict):
                lines.append(f"{prov.name}:")
                lines += [f"  {k}: {v}" for k, v in record.items() if isinstance(v, (str, int, float, bool))]
            else:
                lines.append(f"{prov.name}: not a JSON object")
    return lines, (prov if prov.is_file() else None)


def build_case_report(folder: PathLike, *, model: PathLike | None = None) -> CaseReport:
    """Read a case folder and measure what its report shows (module docstring).

    Parameters
    ----------
    folder : path-like
        The case folder.
    model : path-like, optional
        The model that made the mask (a model folder, model set or imported release); default: ``case.json``'s
        ``model``.

    Raises
    ------
    InputFileError
        ``folder`` is not a case folder (the message names it and the missing file).
    ReportError
        ``folder`` is a ``quantif response`` output folder.
    GridMismatchError, InvalidSUVError
        As :func:`~nnunet_quantif.response.read_case` and :func:`~nnunet_quantif.quantify.quantify`.
    """
    from .clicks import read_clicks
    from .liver import LiverReferenceError, liver_reference
    from .quantify import label_lesions, quantify
    from .response import RESPONSE_FILE, read_case

    folder = Path(folder)
    if folder.is_dir() and (folder / RESPONSE_FILE).is_file() and find_image(folder, "pet") is None:
        raise ReportError(f"{folder}: a 'quantif response' output folder, not a case folder; report it with "
                          "--response")
    tp = read_case(folder)
    pet_path = find_image(folder, "pet")
    pet_suv = tp.pet if tp.sul_factor is None else read_pet(pet_path)[0]
    name = str(tp.meta.get(CASE_NAME_KEY) or folder.resolve().name)
    stats = quantify(tp.mask, pet_suv, tp.geometry, case=name, mask_source=str(find_image(folder, "mask")),
                     pet_source=str(pet_path))
    labels, _ = label_lesions(tp.mask)
    liver, liver_note = None, ""
    if tp.liver is None:
        liver_note = "no liver mask in the case folder (liver.nii.gz / liver.mha): no reference"
    else:
        try:
            liver = liver_reference(tp.pet, tp.liver, tp.geometry, tp.mask, source=str(folder))
        except LiverReferenceError as e:
            liver_note = str(e)
    clicks_path, clicks_note = _one_file(folder, CLICKS_NAME, CLICKS_PATTERN)
    clicks = None
    if clicks_path is not None:
        try:
            clicks = read_clicks(clicks_path, shape=tp.geometry.shape, max_clicks=None)
        except QuantIFError as e:
            clicks_note = f"{clicks_path.name}: unreadable ({e})"
    elif not clicks_note:
        clicks_note = "none recorded"
    table_path, table_note = _one_file(folder, LESIONS_NAME, LESIONS_PATTERN)
    if table_path is not None:
        table_note = _read_saved_table(table_path, stats)
    model_lines, prov = _model_lines(folder, model, tp.meta)
    files = {"ct": find_image(folder, "ct"), "pet": pet_path, "mask": find_image(folder, "mask"),
             "liver": find_image(folder, "liver"),
             "case.json": folder / "case.json" if (folder / "case.json").is_file() else None,
             "clicks": clicks_path, "saved lesion table": table_path, "provenance.json": prov}
    return CaseReport(folder=folder, name=name, stats=stats, geometry=tp.geometry, pet_suv=pet_suv, labels=labels,
                      sul_factor=tp.sul_factor, liver=liver, liver_units=tp.pet_units, liver_note=liver_note,
                      clicks=clicks, clicks_note=clicks_note, saved_table_note=table_note, model_lines=model_lines,
                      files=files, meta=tp.meta)


def _centroid_zyx(lesion) -> tuple[float, float, float]:
    return tuple(float(v) for v in Geometry.to_array_order(np.asarray(lesion.centroid_xyz, dtype=float)))


def case_figure(report: CaseReport) -> bytes:
    """PNG of the coronal and sagittal MIPs of a case report: lesions outlined and numbered, clicks, liver sphere."""
    outlines = [Outline(report.labels > 0, LESION_COLOUR)]
    if report.liver is not None:
        outlines.append(Outline(report.liver.sphere_mask(report.geometry), LIVER_COLOUR, 1.2))
    markers = [Marker(str(le.label), _centroid_zyx(le), LESION_COLOUR) for le in report.stats.lesions]
    if report.clicks is not None:
        markers += [Marker("tumor click", tuple(float(v) for v in zyx), TUMOR_CLICK_COLOUR, "+")
                    for zyx in report.clicks.tumor]
        markers += [Marker("background click", tuple(float(v) for v in zyx), BACKGROUND_CLICK_COLOUR, "x")
                    for zyx in report.clicks.background]
    common = {"pet": report.pet_suv, "geometry": report.geometry, "outlines": outlines, "markers": markers}
    return figure_png([{**common, "axis": 1, "title": "coronal MIP (SUVbw)"},
                       {**common, "axis": 2, "title": "sagittal MIP (SUVbw)"}])


def _page(title: str, body: list[str]) -> str:
    from . import __version__

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(body)
            + f"\n<p class=\"small\">Written by nnunet-quantif {_e(__version__)} (quantif report). Research use; "
              "not a medical device.</p>\n</body></html>\n")


def _lines_list(lines: Sequence[str], absent: str) -> str:
    if not lines:
        return f'<p class="absent">{_e(absent)}</p>'
    return "<ul>" + "".join(f"<li>{_e(line)}</li>" for line in lines) + "</ul>"


def _liver_table(ref, units: str, note: str) -> str:
    from .response import percist_measurable_threshold

    if ref is None:
        return f'<p class="absent">{_e(note)}</p>'
    quality = "meets the PERCIST minimum (full 3 cm sphere)" if ref.quality_ok else \
        f"BELOW the PERCIST minimum: {ref.reason}"
    rows = [("mean", _cell(ref.mean)), ("SD", _cell(ref.sd)), ("sphere radius (mm)", _cell(ref.radius_mm, 1)),
            ("voxels", f"<td>{ref.voxels}</td>"),
            ("centre (x, y, z) mm", f"<td>{_e(', '.join(f'{v:.1f}' for v in ref.centre_mm))}</td>"),
            ("right lobe", f"<td>{'yes' if ref.right_lobe else 'no'}</td>"),
            ("PERCIST measurable threshold (1.5 x mean + 2 x SD)",
             _cell(percist_measurable_threshold(ref.mean, ref.sd))),
            ("quality", f'<td class="t{"" if ref.quality_ok else " flag"}">{_e(quality)}</td>')]
    return (f'<p class="small">PET units: {_e(units)}</p><table>' + "".join(f'<tr><th class="t">{_e(k)}</th>{v}</tr>'
                                                              for k, v in rows) + "</table>")


def render_case_html(report: CaseReport, *, title: str | None = None) -> str:
    """The case report's HTML page (self-contained; every text escaped)."""
    stats = report.stats
    f = report.sul_factor
    title = title or f"Case report: {report.name}"
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="small">case folder {_e(report.folder)}; tracer {_e(report.meta.get("tracer") or "unknown")}'
            f"; {stats.n_lesions} lesion(s), total MTV {_e(_num(stats.total_mtv_ml))} ml, total TLG "
            f"{_e(_num(stats.total_tlg))}</p>",
            "<h2>PET maximum-intensity projections</h2>", _img(case_figure(report), "PET MIPs with lesions"),
            '<p class="small">Red: lesions, numbered by lesion id; green: liver reference sphere; + tumor click, '
            "x background click.</p>", "<h2>Lesions</h2>"]
    head = ["lesion", "voxels", "MTV (ml)", "SUVmax", "SUVmean", "SUVpeak", "TLG (SUV x ml)"]
    if f is not None:
        head += ["SULmax", "SULmean", "SULpeak"]
    head += ["centroid (x, y, z) mm"]
    if stats.n_lesions:
        rows = []
        for le in stats.lesions:
            cells = [f"<td>{le.label}</td>", f"<td>{le.voxels}</td>", _cell(le.mtv_ml), _cell(le.suv_max),
                     _cell(le.suv_mean), _cell(le.suv_peak), _cell(le.tlg)]
            if f is not None:
                cells += [_cell(le.suv_max * f), _cell(le.suv_mean * f), _cell(le.suv_peak * f)]
            cells.append(f"<td>{_e(', '.join(f'{v:.1f}' for v in le.centroid_mm))}</td>")
            rows.append(f'<tr data-lesion="{le.label}">' + "".join(cells) + "</tr>")
        body.append('<table class="lesions"><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
                    + "".join(rows) + "</table>")
    else:
        body.append('<p class="absent">no lesion in the mask</p>')
    sul_text = (f"SUL = SUVbw x {f:.6g} (lean body mass / weight, Janmahasatian)" if f is not None
                else "SUL not shown: case.json gives no sex, height_m and weight_kg")
    body.append(f'<p class="small">SUV columns: quantif stats on the folder\'s PET (SUVbw). {_e(sul_text)}. '
                "SUVpeak: highest mean in a 1 ml sphere centred on a lesion voxel.</p>")
    if report.saved_table_note:
        body.append(f'<p class="small">Saved lesion table: {_e(report.saved_table_note)}</p>')
    body += ["<h2>Liver reference (PERCIST)</h2>", _liver_table(report.liver, report.liver_units, report.liver_note)]
    body += ["<h2>Model and provenance</h2>", _lines_list(report.model_lines, "none recorded")]
    body.append("<h2>Clicks used</h2>")
    if report.clicks is None or len(report.clicks) == 0:
        note = report.clicks_note or ("none recorded" if report.clicks is None else "the click file holds no click")
        body.append(f'<p class="absent">{_e(note)}</p>')
    else:
        rows = []
        for kind, points in (("tumor", report.clicks.tumor_xyz()), ("background", report.clicks.background_xyz())):
            for i, xyz in enumerate(points, 1):
                x, y, z = (int(v) for v in xyz)
                suv = float(report.pet_suv[z, y, x])
                rows.append(f'<tr class="click"><td class="t">{kind}</td><td>{i}</td><td>{x}</td><td>{y}</td>'
                            f"<td>{z}</td>{_cell(suv)}</tr>")
        body.append(f'<p class="small">from {_e(report.files["clicks"].name)}; voxel indices (x, y, z) as in the '
                    "click files</p><table><tr><th class=\"t\">kind</th><th>#</th><th>x</th><th>y</th><th>z</th>"
                    "<th>SUVbw</th></tr>" + "".join(rows) + "</table>")
    body.append("<h2>Files</h2><table>" + "".join(
        f'<tr><th class="t">{_e(role)}</th><td class="t">'
        + (_e(path.name) if path is not None else '<span class="absent">absent</span>') + "</td></tr>"
        for role, path in report.files.items()) + "</table>")
    return _page(title, body)


# --------------------------------------------------------------------------- response report


@dataclass
class ResponseReport:
    """What a response report shows (:func:`build_response_report`)."""

    folder: Path
    data: dict
    rows: list[dict]
    rows_note: str
    baseline: TimePoint
    followup: TimePoint
    baseline_labels: np.ndarray
    followup_labels: np.ndarray


def _read_json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputFileError(f"{path}: not found (a 'quantif response' output folder holds response.json)") from None
    except (OSError, ValueError) as e:
        raise InputFileError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise InputFileError(f"{path}: expected a JSON object")
    return data


def build_response_report(folder: PathLike, *, baseline: PathLike | None = None,
                          followup: PathLike | None = None) -> ResponseReport:
    """Read a ``quantif response`` output folder and its two case folders.

    Parameters
    ----------
    folder : path-like
        Holds ``response.json`` and ``lesions.csv``.
    baseline, followup : path-like, optional
        The case folders; default: those ``response.json`` names (``baseline_case``, ``followup_case``).

    Raises
    ------
    InputFileError
        No or unreadable ``response.json``; a case folder that :func:`~nnunet_quantif.response.read_case` refuses.
    ReportError
        No case folder named or given; a lesion id of ``lesions.csv`` that the case's mask does not have.
    """
    from .quantify import label_lesions
    from .response import LESIONS_FILE, RESPONSE_FILE, read_case

    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"{folder}: not a folder (give the output folder of 'quantif response')")
    data = _read_json_object(folder / RESPONSE_FILE)
    cases = []
    for given, key in ((baseline, "baseline_case"), (followup, "followup_case")):
        path = given if given is not None else data.get(key)
        if not path:
            raise ReportError(f"{folder / RESPONSE_FILE}: names no {key}; give --baseline DIR --followup DIR")
        cases.append(read_case(path))
    rows, rows_note = [], ""
    table = folder / LESIONS_FILE
    if table.is_file():
        try:
            with table.open(newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            rows_note = f"{table.name}: unreadable ({e})"
    else:
        rows_note = f"{table.name}: absent"
    labels = [label_lesions(tp.mask) for tp in cases]
    for row in rows:
        for key, (_, n), name in (("baseline_lesion", labels[0], "baseline"),
                                  ("followup_lesion", labels[1], "follow-up")):
            value = str(row.get(key) or "")
            if value and not (value.isdigit() and 1 <= int(value) <= n):
                raise ReportError(f"{table}: {name} lesion {value!r} is not one of the {n} lesion(s) of the "
                                  f"{name} mask: the masks changed after 'quantif response' ran")
    return ResponseReport(folder, data, rows, rows_note, cases[0], cases[1], labels[0][0], labels[1][0])


def _centroids(labels: np.ndarray, n: int) -> list[tuple[float, float, float]]:
    from scipy import ndimage

    if n == 0:
        return []
    return [tuple(float(v) for v in c) for c in ndimage.center_of_mass(labels > 0, labels, range(1, n + 1))]


def response_figure(report: ResponseReport) -> bytes:
    """PNG of the baseline and follow-up coronal MIPs side by side, every lesion-table row numbered once."""
    nb, nf = int(report.baseline_labels.max()), int(report.followup_labels.max())
    cb, cf = _centroids(report.baseline_labels, nb), _centroids(report.followup_labels, nf)
    groups = {"matched": (MATCHED_COLOUR, ""), "new": (NEW_COLOUR, " new"), "disappeared": (DISAPPEARED_COLOUR,
                                                                                           " gone")}
    ids_b: dict[str, list[int]] = {s: [] for s in groups}
    ids_f: dict[str, list[int]] = {s: [] for s in groups}
    markers_b, markers_f = [], []
    for number, row in enumerate(report.rows, 1):
        status = row.get("status", "")
        colour, suffix = groups.get(status, ("black", f" {status}"))
        b, f = str(row.get("baseline_lesion") or ""), str(row.get("followup_lesion") or "")
        if b:
            ids_b.setdefault(status, []).append(int(b))
            markers_b.append(Marker(f"{number}{suffix}", cb[int(b) - 1], colour))
        if f:
            ids_f.setdefault(status, []).append(int(f))
            markers_f.append(Marker(f"{number}{suffix}", cf[int(f) - 1], colour))

    def outlines(labels: np.ndarray, ids: dict[str, list[int]]) -> list[Outline]:
        out = [Outline(np.isin(labels, v), groups.get(s, ("black", ""))[0]) for s, v in ids.items() if v]
        if not report.rows and labels.any():
            out.append(Outline(labels > 0, MATCHED_COLOUR))
        return out

    b, f = report.baseline, report.followup
    vmax = max(float(np.percentile(np.asarray(tp.pet).max(axis=1), 99.5)) for tp in (b, f))
    return figure_png([
        {"pet": b.pet, "geometry": b.geometry, "outlines": outlines(report.baseline_labels, ids_b),
         "markers": markers_b, "title": f"baseline ({b.pet_units})", "vmax": max(vmax, 1.0)},
        {"pet": f.pet, "geometry": f.geometry, "outlines": outlines(report.followup_labels, ids_f),
         "markers": markers_f, "title": f"follow-up ({f.pet_units})", "vmax": max(vmax, 1.0)}])


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100.0 * float(value):+.1f} %"


def decision_lines(data: dict) -> list[tuple[str, str]]:
    """The numbers that decided the category of a ``response.json``, as (what, value) text pairs, with the rule
    that applied last."""
    from .response import (
        PERCIST_CHANGE_FRACTION,
        PERCIST_MIN_SUL_CHANGE,
        RECIP_PD_CHANGE,
        RECIP_PR_CHANGE,
    )

    new = data.get("new_lesions", 0)
    out: list[tuple[str, str]] = [("new lesions", str(new))]
    category = data.get("category")
    if data.get("criteria") == "percist":
        units = (data.get("pet_units") or {}).get("baseline", "SUL")
        liver = (data.get("liver_reference") or {}).get("followup") or {}
        out += [("measurable threshold (1.5 x baseline liver mean + 2 SD)",
                 f"{_num(data.get('measurable_threshold'))} {units}"),
                ("baseline target SULpeak", f"{_num(data.get('baseline_target_sul_peak'))} {units}"),
                ("follow-up target SULpeak", f"{_num(data.get('followup_target_sul_peak'))} {units}"
                 if data.get("followup_target_sul_peak") is not None else "no lesion left"),
                ("SULpeak change", f"{_num(data.get('sul_peak_change'))} {units} "
                 f"({_pct(data.get('sul_peak_change_fraction'))})" if data.get("sul_peak_change") is not None
                 else ""),
                ("follow-up liver mean", f"{_num(liver.get('mean'))} {units}")]
        rule = {"PMD": f"a new lesion, or SULpeak up by more than {PERCIST_CHANGE_FRACTION:.0%} and more than "
                       f"{PERCIST_MIN_SUL_CHANGE:g}",
                "CMR": "no new lesion and no follow-up lesion above the follow-up liver mean",
                "PMR": f"SULpeak down by at least {PERCIST_CHANGE_FRACTION:.0%} and at least "
                       f"{PERCIST_MIN_SUL_CHANGE:g}, no new lesion",
                "SMD": "neither CMR, PMR nor PMD"}.get(category, "")
    else:
        out += [("baseline total tumour volume", f"{_num(data.get('baseline_volume_ml'))} ml"),
                ("follow-up total tumour volume", f"{_num(data.get('followup_volume_ml'))} ml"),
                ("volume change", _pct(data.get("volume_change_fraction")))]
        rule = {"CR": "no tumour left and no new lesion",
                "PR": f"volume change at most {RECIP_PR_CHANGE:+.0%} and no new lesion",
                "PD": f"volume change at least {RECIP_PD_CHANGE:+.0%} and a new lesion",
                "SD": "neither CR, PR nor PD"}.get(category, "")
    out.append(("rule", rule))
    return out


def render_response_html(report: ResponseReport, *, title: str | None = None) -> str:
    """The response report's HTML page (self-contained; every text escaped)."""
    data = report.data
    criteria = str(data.get("criteria", "")).upper()
    name = f"{report.baseline.folder.name} -> {report.followup.folder.name}"
    title = title or f"Response report: {name}"
    counts = data.get("lesions") or {}
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="small">baseline {_e(report.baseline.folder)}; follow-up {_e(report.followup.folder)}; '
            f"response folder {_e(report.folder)}</p>",
            f'<div class="category">{_e(criteria)} {_e(data.get("category", "?"))}</div>',
            f"<p>{_e(counts.get('matched', 0))} matched, {_e(counts.get('new', 0))} new, "
            f"{_e(counts.get('disappeared', 0))} disappeared lesion(s)</p>",
            "<h2>The numbers that decided it</h2><table class=\"decision\">"
            + "".join(f'<tr><th class="t">{_e(k)}</th><td class="t">{_e(v)}</td></tr>' for k, v in decision_lines(data))
            + "</table>"]
    flags = data.get("flags") or []
    if flags:
        body.append("<ul>" + "".join(f'<li class="flag">{_e(flag)}</li>' for flag in flags) + "</ul>")
    if data.get("criteria") == "percist":
        refs = data.get("liver_reference") or {}
        body.append("<h2>Liver references</h2><table><tr><th class=\"t\">scan</th><th>mean</th><th>SD</th>"
                    "<th>radius (mm)</th><th class=\"t\">quality</th></tr>" + "".join(
                        f'<tr><td class="t">{_e(scan)}</td>{_cell(ref.get("mean"))}{_cell(ref.get("sd"))}'
                        f'{_cell(ref.get("radius_mm"), 1)}<td class="t">'
                        + _e("ok" if ref.get("quality_ok") else f"below the PERCIST minimum: {ref.get('reason')}")
                        + "</td></tr>" for scan, ref in refs.items() if isinstance(ref, dict)) + "</table>")
    body += ["<h2>Coronal PET MIPs</h2>", _img(response_figure(report), "baseline and follow-up MIPs"),
             '<p class="small">Each row of the lesion table has one number: a matched pair carries it on both '
             "MIPs (orange); a new lesion is marked 'new' on the follow-up (red), a disappeared one 'gone' on the "
             "baseline (blue).</p>", "<h2>Lesions</h2>"]
    if report.rows:
        head = ["#", "status", "baseline lesion", "follow-up lesion", "matched by", "distance (mm)",
                "baseline volume (ml)", "follow-up volume (ml)", "baseline SULpeak", "follow-up SULpeak"]
        keys = ["status", "baseline_lesion", "followup_lesion", "matched_by", "distance_mm", "baseline_volume_ml",
                "followup_volume_ml", "baseline_sul_peak", "followup_sul_peak"]
        rows = []
        for number, row in enumerate(report.rows, 1):
            cells = "".join(f'<td class="t">{_e(row.get(k, ""))}</td>' if k in ("status", "matched_by")
                            else f"<td>{_e(row.get(k, ''))}</td>" for k in keys)
            rows.append(f'<tr data-number="{number}"><td>{number}</td>{cells}</tr>')
        body.append('<table class="lesions"><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
                    + "".join(rows) + "</table>")
    else:
        body.append(f'<p class="absent">{_e(report.rows_note or "no lesion in either mask")}</p>')
    return _page(title, body)


# --------------------------------------------------------------------------- writing


def check_report_path(path: PathLike, inputs: Sequence[PathLike] = ()) -> Path:
    """Check, before any work, that ``path`` can be written as a report (``.html``/``.htm``, not an input)."""
    from .errors import OutputPathError
    from .io import check_output_path

    target = check_output_path(path, inputs=inputs)
    if not target.name.lower().endswith(REPORT_ENDINGS):
        raise OutputPathError(f"{target}: a report is an HTML file (ending {' or '.join(REPORT_ENDINGS)})")
    return target


def write_report(text: str, path: PathLike, inputs: Sequence[PathLike] = ()) -> Path:
    """Write the report atomically; ``inputs`` are never overwritten."""
    return write_text(text, path, inputs)


def folder_files(*folders: PathLike) -> tuple[Path, ...]:
    """The files directly in ``folders`` that a report must not overwrite: all but earlier reports
    (:data:`REPORT_ENDINGS`), so that a report written into its case folder can be written again."""
    return tuple(p for d in folders if Path(d).is_dir() for p in Path(d).iterdir()
                 if p.is_file() and not p.name.lower().endswith(REPORT_ENDINGS))


__all__ = ["CaseReport", "Marker", "Outline", "ReportError", "ResponseReport", "build_case_report",
           "build_response_report", "case_figure", "check_report_path", "decision_lines", "figure_png",
           "folder_files", "mip_panel", "png_data_uri", "render_case_html", "render_response_html",
           "response_figure", "write_report"]
