"""``quantif report``: the self-contained HTML case and response reports, their values against ``quantif stats``,
``response.json`` and the liver reference, escaping, missing files, bad inputs, and a real (headless Chromium)
rendering.

``QUANTIF_UPDATE_DOC_IMAGES=1`` makes the browser test also copy its screenshots to ``docs/img/report_case.png``
and ``docs/img/report_response.png`` (phantom data only).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from _response_cases import BASE_LESIONS, make_case, scaled_lesions
from matplotlib.image import imread

from nnunet_quantif.cli import main
from nnunet_quantif.clicks import simulate_clicks, write_clicks
from nnunet_quantif.io import write_image
from nnunet_quantif.liver import liver_reference
from nnunet_quantif.phantoms import ORGAN_IDS, generate_case
from nnunet_quantif.response import read_case

DOC_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


class _Page(HTMLParser):
    """Collects the ``src``/``href`` attributes, the lesion rows (``data-lesion``/``data-number``) with their
    cells' ``data-value`` and text, the click rows and the text."""

    def __init__(self, text: str):
        super().__init__()
        self.sources: list[str] = []
        self.rows: dict[str, list[tuple[str | None, str]]] = {}
        self.clicks: list[list[str]] = []
        self.tags: set[str] = set()
        self._row: list | None = None
        self._cell: list | None = None
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        for key in ("src", "href"):
            if key in a:
                self.sources.append(a[key])
        if tag == "tr":
            key = a.get("data-lesion") or a.get("data-number")
            self._row = [] if (key or a.get("class") == "click") else None
            if key:
                self.rows[key] = self._row
            elif a.get("class") == "click":
                self.clicks.append(self._row)
        elif tag == "td" and self._row is not None:
            self._cell = [a.get("data-value"), ""]

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append(tuple(self._cell))
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell[1] += data


def _self_contained(text: str) -> _Page:
    page = _Page(text)
    assert page.sources, "no image in the report"
    assert all(s.startswith("data:image/png;base64,") for s in page.sources), page.sources
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), "a link to another host"
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert not re.search(r"url\(", text), "a CSS url() reference"
    return page


def _phantom_case(folder: Path, seed: int = 7) -> Path:
    """A whole-body FDG phantom as a case folder, with its liver map, case.json and saved clicks."""
    case = generate_case("fdg", "small", seed=seed, healthy=False)
    folder.mkdir(parents=True)
    write_image(case.ct.astype(np.float32), case.geometry, folder / "ct.nii.gz")
    write_image(case.pet.astype(np.float32), case.geometry, folder / "pet.nii.gz")
    write_image(case.label.astype(np.uint8), case.geometry, folder / "mask.nii.gz")
    write_image((case.organs == ORGAN_IDS["liver"]).astype(np.uint8), case.geometry, folder / "liver.nii.gz")
    (folder / "case.json").write_text(json.dumps({"tracer": "fdg", "sex": "F", "height_m": 1.65,
                                                  "weight_kg": 70.0, "case": f"phantom_fdg_{seed}"}))
    clicks = simulate_clicks(case.label, case.pet, n=2, seed=seed)
    write_clicks(clicks, folder / f"phantom_fdg_{seed}_clicks.json")
    (folder / "provenance.json").write_text(json.dumps({"release": "test release", "licence": "CC-BY-4.0"}))
    return folder


def _stats_json(tmp_path: Path, case: Path) -> dict:
    out = tmp_path / "stats.json"
    assert main(["stats", "--mask", str(case / "mask.nii.gz"), "--pet", str(case / "pet.nii.gz"),
                 "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_case_report_values_equal_stats_liver_and_clicks(tmp_path, capsys):
    case = _phantom_case(tmp_path / "case")
    out = tmp_path / "report.html"
    assert main(["report", str(case), "--out", str(out)]) == 0
    assert "phantom_fdg_7: " in capsys.readouterr().out
    text = out.read_text()
    page = _self_contained(text)
    stats = _stats_json(tmp_path, case)
    assert stats["n_lesions"] > 1
    tp = read_case(case)
    assert tp.sul_factor is not None
    for lesion in stats["lesions"]:
        row = page.rows[str(lesion["lesion"])]
        assert row[0][1] == str(lesion["lesion"]) and row[1][1] == str(lesion["voxels"])
        shown = [float(v) for v, _ in row[2:7]]
        assert shown == [lesion[k] for k in ("mtv_ml", "suv_max", "suv_mean", "suv_peak", "tlg")]  # exact
        assert row[3][1] == f"{lesion['suv_max']:.3f}"
        sul = [float(v) for v, _ in row[7:10]]
        assert sul == pytest.approx([lesion[k] * tp.sul_factor for k in ("suv_max", "suv_mean", "suv_peak")])
    assert len(page.rows) == stats["n_lesions"]
    ref = liver_reference(tp.pet, tp.liver, tp.geometry, tp.mask)
    assert f'data-value="{ref.mean!r}"' in text and f'data-value="{ref.sd!r}"' in text
    assert "meets the PERCIST minimum" in text and "PET units: SUL" in text
    clicks = json.loads((case / "phantom_fdg_7_clicks.json").read_text())["points"]
    shown_clicks = [(row[0][1], [int(c[1]) for c in row[2:5]]) for row in page.clicks]
    assert shown_clicks == [(p["name"], p["point"]) for p in clicks] and len(clicks) == 4
    pet = tp.pet / tp.sul_factor
    for row, p in zip(page.clicks, clicks):
        x, y, z = p["point"]
        assert float(row[5][0]) == pytest.approx(float(pet[z, y, x]), rel=1e-5)  # SUVbw at the click
    assert "release: test release" in text and "licence: CC-BY-4.0" in text
    assert "none recorded" not in text


def test_case_report_saved_lesion_table_is_checked(tmp_path):
    case = _phantom_case(tmp_path / "case")
    assert main(["stats", "--mask", str(case / "mask.nii.gz"), "--pet", str(case / "pet.nii.gz"),
                 "--out", str(case / "phantom_fdg_7_lesions.csv")]) == 0
    out = tmp_path / "r.html"
    assert main(["report", str(case), "--out", str(out)]) == 0
    assert "phantom_fdg_7_lesions.csv: agrees with the measurement" in out.read_text()
    other = tmp_path / "other"
    make_case(other, BASE_LESIONS, seed=1)
    shutil.copy(case / "phantom_fdg_7_lesions.csv", other / "lesions.csv")
    assert main(["report", str(other), "--out", str(out)]) == 0
    assert "saved for another mask" in out.read_text() or "differs from the measurement" in out.read_text()


def test_case_report_missing_optional_files_and_escaping(tmp_path):
    folder = tmp_path / "<script>alert(1)<script>"
    make_case(folder, BASE_LESIONS, seed=1, sul=False)
    (folder / "liver.nii.gz").unlink()
    (folder / "case.json").write_text(json.dumps({"tracer": "<b>fdg</b>", "case": "<script>alert('x')</script>",
                                                  "model": "no_such_model_<i>"}))
    (folder / "provenance.json").write_text(json.dumps({"release": "<img src=x onerror=alert(1)>"}))
    out = tmp_path / "r.html"
    assert main(["report", str(folder), "--out", str(out)]) == 0
    text = out.read_text()
    page = _self_contained(text)
    assert "<script" not in text.lower() and "<img src=x" not in text and "<b>fdg" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "no liver mask in the case folder" in text
    assert "cannot describe the model" in text  # a model that is not there is reported, not a crash
    assert "Clicks used</h2>\n<p class=\"absent\">none recorded" in text
    assert "SUL not shown" in text and len(page.rows) == 2
    files = "".join(page.text)
    assert "absent" in files


def test_case_report_bad_inputs(tmp_path, capsys):
    missing = tmp_path / "no_case_here"
    assert main(["report", str(missing), "--out", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "not a folder" in err
    case = make_case(tmp_path / "case", BASE_LESIONS, seed=1)
    (case / "mask.nii.gz").unlink()
    assert main(["report", str(case), "--out", str(tmp_path / "r.html")]) == 1
    assert "no mask image" in capsys.readouterr().err
    case = make_case(tmp_path / "case2", BASE_LESIONS, seed=1)
    before = (case / "pet.nii.gz").read_bytes()
    assert main(["report", str(case), "--out", str(case / "pet.nii.gz")]) == 1  # checked before any work
    assert "refusing to overwrite the input file" in capsys.readouterr().err
    assert (case / "pet.nii.gz").read_bytes() == before
    assert main(["report", str(case), "--out", str(tmp_path / "r.txt")]) == 1
    assert "report is an HTML file" in capsys.readouterr().err
    for _ in range(2):  # a report inside its case folder is no input: it can be written again
        assert main(["report", str(case), "--out", str(case / "report.html")]) == 0
    (case / "old.html").mkdir()
    assert main(["report", str(case), "--out", str(case / "old.html")]) == 1
    assert "existing folder" in capsys.readouterr().err
    assert main(["report", "--out", str(tmp_path / "r.html")]) == 1
    assert "give a case folder" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


@pytest.fixture(scope="module")
def response_run(tmp_path_factory):
    """A PERCIST run: the first lesion grown by 25 % with a new lesion (PMD), through 'quantif response'."""
    root = tmp_path_factory.mktemp("response")
    b = make_case(root / "baseline", BASE_LESIONS, seed=1, tracer="fdg")
    follow = scaled_lesions(BASE_LESIONS, 0, 1.25, 1.25) + [((-20.0, 30.0, -40.0), 8.0, 7.0)]
    f = make_case(root / "followup", follow, seed=2, tracer="fdg")
    assert main(["response", "--baseline", str(b), "--followup", str(f), "--out", str(root / "out")]) == 0
    return root


def test_response_report_category_numbers_and_numbering(response_run, tmp_path):
    out = tmp_path / "response.html"
    assert main(["report", "--response", str(response_run / "out"), "--out", str(out)]) == 0
    text = out.read_text()
    page = _self_contained(text)
    data = json.loads((response_run / "out" / "response.json").read_text())
    assert data["category"] == "PMD" and data["baseline_case"] == str(response_run / "baseline")
    assert "PERCIST PMD" in text
    assert f"{data['baseline_target_sul_peak']:.3f} SUL" in text
    assert f"{data['followup_target_sul_peak']:.3f} SUL" in text
    assert f"{data['measurable_threshold']:.3f} SUL" in text
    assert f"{100 * data['sul_peak_change_fraction']:+.1f} %" in text
    assert "<th class=\"t\">new lesions</th><td class=\"t\">1</td>" in text
    # one number per lesion-table row; a matched row carries both ids
    rows = {k: [c[1] for c in v] for k, v in page.rows.items()}
    assert sorted(rows) == ["1", "2", "3"]
    statuses = sorted(r[1] for r in rows.values())
    assert statuses == ["matched", "matched", "new"]
    for r in rows.values():
        assert (r[2] != "") == (r[1] != "new") and r[3] != ""
    # both MIPs in one image, side by side: wider than tall
    png = imread(io.BytesIO(base64.b64decode(page.sources[0].split(",", 1)[1])), format="png")
    assert png.shape[1] > 1.5 * png.shape[0]


def test_response_report_cases_given_and_missing(response_run, tmp_path, capsys):
    data_path = response_run / "out" / "response.json"
    copy = tmp_path / "out"
    shutil.copytree(response_run / "out", copy)
    data = json.loads(data_path.read_text())
    del data["baseline_case"], data["followup_case"]
    (copy / "response.json").write_text(json.dumps(data))
    assert main(["report", "--response", str(copy), "--out", str(tmp_path / "r.html")]) == 1
    assert "names no baseline_case" in capsys.readouterr().err
    assert main(["report", "--response", str(copy), "--baseline", str(response_run / "baseline"),
                 "--followup", str(response_run / "followup"), "--out", str(tmp_path / "r.html")]) == 0
    (copy / "lesions.csv").unlink()
    assert main(["report", "--response", str(copy), "--baseline", str(response_run / "baseline"),
                 "--followup", str(response_run / "followup"), "--out", str(tmp_path / "r.html")]) == 0
    assert "lesions.csv: absent" in (tmp_path / "r.html").read_text()
    assert main(["report", str(response_run / "out"), "--out", str(tmp_path / "x.html")]) == 1
    assert "report it with --response" in capsys.readouterr().err


def _non_trivial_png(path: Path) -> None:
    assert path.stat().st_size > 20_000, f"{path}: {path.stat().st_size} bytes"
    img = imread(path)
    grey = img[..., :3].mean(axis=-1)
    assert grey.std() > 0.05, "the screenshot is (nearly) blank"
    assert (grey < 0.5).mean() > 0.01, "no dark pixels: nothing drawn"


def test_reports_render_in_a_real_browser(response_run, tmp_path):
    from _browser import screenshot

    case = _phantom_case(tmp_path / "case")
    html_case, html_resp = tmp_path / "case.html", tmp_path / "response.html"
    assert main(["report", str(case), "--out", str(html_case)]) == 0
    assert main(["report", "--response", str(response_run / "out"), "--out", str(html_resp)]) == 0
    shots = {"report_case.png": screenshot(html_case.as_uri(), tmp_path / "case.png", size=(1100, 1500)),
             "report_response.png": screenshot(html_resp.as_uri(), tmp_path / "response.png", size=(1100, 1300))}
    for png in shots.values():
        _non_trivial_png(png)
    if os.environ.get("QUANTIF_UPDATE_DOC_IMAGES") == "1":
        for name, png in shots.items():
            shutil.copy(png, DOC_IMG / name)


def test_recip_response_report_marks_disappeared_lesions(tmp_path, capsys):
    """A hand-written RECIP CR result (no registration run): both baseline lesions gone, each numbered once."""
    b = make_case(tmp_path / "b", BASE_LESIONS, seed=1, tracer="psma")
    f = make_case(tmp_path / "f", [], seed=2, tracer="psma")
    out = tmp_path / "resp"
    out.mkdir()
    (out / "response.json").write_text(json.dumps({
        "criteria": "recip", "category": "CR", "lesions": {"matched": 0, "new": 0, "disappeared": 2},
        "new_lesions": 0, "baseline_volume_ml": 12.5, "followup_volume_ml": 0.0, "volume_change_fraction": -1.0,
        "flags": ["a flag with <tags>"], "baseline_case": str(b), "followup_case": str(f)}))
    header = "status,baseline_lesion,followup_lesion,matched_by,distance_mm,baseline_volume_ml,followup_volume_ml," \
             "baseline_sul_peak,followup_sul_peak\n"
    (out / "lesions.csv").write_text(header + "disappeared,1,,,,7.0,,6.0,\ndisappeared,2,,,,5.5,,5.0,\n")
    html_path = tmp_path / "r.html"
    assert main(["report", "--response", str(out), "--out", str(html_path)]) == 0
    text = html_path.read_text()
    page = _self_contained(text)
    assert "RECIP CR" in text and "12.500 ml" in text and "-100.0 %" in text
    assert "no tumour left and no new lesion" in text and "a flag with &lt;tags&gt;" in text
    assert [[c[1] for c in page.rows[k][:3]] for k in ("1", "2")] == [["1", "disappeared", "1"],
                                                                       ["2", "disappeared", "2"]]
    (out / "lesions.csv").write_text(header + "disappeared,9,,,,7.0,,6.0,\n")
    assert main(["report", "--response", str(out), "--out", str(html_path)]) == 1
    assert "baseline lesion '9' is not one of the 2 lesion(s)" in capsys.readouterr().err
