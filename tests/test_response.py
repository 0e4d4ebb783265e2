"""Treatment response (PERCIST 1.0, RECIP 1.0) on generated phantom pairs, and the rules' threshold edges."""

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from _response_cases import BASE_LESIONS, CENTRE, SPACING, make_case, scaled_lesions

from nnunet_quantif.liver import LiverReference
from nnunet_quantif.response import (
    PERCIST_CHANGE_FRACTION,
    PERCIST_LIVER_AGREEMENT_FRACTION,
    PERCIST_LIVER_AGREEMENT_SUL,
    PERCIST_LIVER_FACTOR,
    PERCIST_MIN_SUL_CHANGE,
    PERCIST_SD_FACTOR,
    RECIP_PD_CHANGE,
    RECIP_PR_CHANGE,
    ResponseError,
    assess_response,
    liver_references_agree,
    match_lesions,
    percist_baseline_target,
    percist_category,
    read_case,
    recip_category,
    write_response,
)


def _run(tmp_path, follow_lesions, tracer, base_lesions=BASE_LESIONS, **kw):
    b = make_case(tmp_path / f"b_{tracer}", base_lesions, seed=1, tracer=tracer)
    f = make_case(tmp_path / f"f_{tracer}", follow_lesions, seed=2, tracer=tracer, **kw)
    return assess_response(read_case(b), read_case(f), iterations=40)


SCENARIOS = {
    "shrunk_40": (lambda: [scaled_lesions(BASE_LESIONS[:1], 0, 0.6, 0.6), ("PMR", "PR")], BASE_LESIONS[:1]),
    "grown_25_new": (lambda: [scaled_lesions(BASE_LESIONS, 0, 1.25, 1.25) + [((-20.0, 30.0, -40.0), 8.0, 7.0)],
                              ("PMD", "PD")], BASE_LESIONS),
    "no_change": (lambda: [BASE_LESIONS, ("SMD", "SD")], BASE_LESIONS),
    "all_gone": (lambda: [[], ("CMR", "CR")], BASE_LESIONS),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("tracer", ["fdg", "psma"])
def test_phantom_pairs(tmp_path, name, tracer):
    make, base = SCENARIOS[name]
    follow, expected = make()
    result = _run(tmp_path, follow, tracer, base)
    assert result.criteria == ("percist" if tracer == "fdg" else "recip")
    assert result.category == expected[0 if tracer == "fdg" else 1], result.numbers
    statuses = [p.status for p in result.pairs]
    if name == "grown_25_new":
        assert statuses.count("new") == 1 and statuses.count("matched") == len(base)
    elif name == "all_gone":
        assert statuses == ["disappeared"] * len(base)
    else:
        assert statuses == ["matched"] * len(base)
    if tracer == "fdg":
        assert result.numbers["liver_reference"]["baseline"]["quality_ok"]
        assert result.numbers["pet_units"] == {"baseline": "SUL", "followup": "SUL"}


def test_shifted_rotated_followup_still_matched(tmp_path):
    shift, angle = (6.0, -4.0, 3.0), 4.0
    result = _run(tmp_path, BASE_LESIONS, "psma", rotation_deg=angle, shift_mm=shift)
    assert [p.status for p in result.pairs] == ["matched", "matched"]
    assert sorted((p.baseline_lesion, p.followup_lesion) for p in result.pairs) == [(1, 1), (2, 2)]
    assert result.category == "SD"
    # the transform takes each baseline lesion centre to where the follow-up drew it (within a voxel)
    t = math.radians(angle)
    rot = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    for centre, _, _ in BASE_LESIONS:
        truth = rot @ np.asarray(centre) + CENTRE + np.asarray(shift)
        mapped = result.transform.TransformPoint(tuple(np.asarray(centre) + CENTRE))
        assert np.linalg.norm(np.asarray(mapped) - truth) < SPACING


def test_write_response_outputs(tmp_path):
    result = _run(tmp_path, scaled_lesions(BASE_LESIONS, 0, 1.0, 1.0), "psma")
    paths = write_response(result, tmp_path / "out")
    data = json.loads(paths["response"].read_text())
    assert data["category"] == "SD" and data["lesions"] == {"matched": 2, "new": 0, "disappeared": 0}
    rows = list(csv.DictReader(paths["lesions"].open()))
    assert [r["status"] for r in rows] == ["matched", "matched"]
    assert isinstance(sitk.ReadTransform(str(paths["transform"])), sitk.Transform)


def test_percist_without_liver_is_an_error(tmp_path):
    b = make_case(tmp_path / "b", BASE_LESIONS, seed=1)
    f = make_case(tmp_path / "f", BASE_LESIONS, seed=2)
    (b / "liver.nii.gz").unlink()
    with pytest.raises(ResponseError, match="liver mask"):
        assess_response(read_case(b), read_case(f), iterations=5)


# ---- threshold edges of the classification rules, both sides

def test_percist_pmr_edge():
    base = 10.0
    at_edge = base * (1 - PERCIST_CHANGE_FRACTION)  # -30 %, -3 SUL
    assert percist_category(base, at_edge, 1.0, 0) == "PMR"
    assert percist_category(base, at_edge + 0.01, 1.0, 0) == "SMD"
    assert percist_category(base, at_edge, 1.0, 1) == "PMD"  # a new lesion rules out PMR
    # the 0.8 SUL-unit rule at a baseline of 2.5: -0.8 SUL (-32 %) is PMR, -0.79 SUL (-31.6 %) is not
    assert percist_category(2.5, 2.5 - PERCIST_MIN_SUL_CHANGE, 0.5, 0) == "PMR"
    assert percist_category(2.5, 2.5 - PERCIST_MIN_SUL_CHANGE + 0.01, 0.5, 0) == "SMD"


def test_percist_pmd_edge():
    base = 10.0
    at_edge = base * (1 + PERCIST_CHANGE_FRACTION)  # +30 %: not more than 30 %
    assert percist_category(base, at_edge, 1.0, 0) == "SMD"
    assert percist_category(base, at_edge + 0.01, 1.0, 0) == "PMD"
    assert percist_category(2.0, 2.0 * 1.35, 0.5, 0) == "SMD"  # +35 % but +0.7 SUL only
    assert percist_category(2.0, 2.0 + PERCIST_MIN_SUL_CHANGE + 0.01, 0.5, 0) == "PMD"
    assert percist_category(base, base, 1.0, 1) == "PMD"


def test_percist_cmr_edge():
    assert percist_category(10.0, 1.99, 2.0, 0) == "CMR"  # below the liver mean
    assert percist_category(10.0, 2.0, 2.0, 0) == "PMR"  # at the liver mean: not resolved
    assert percist_category(10.0, None, 2.0, 0) == "CMR"
    assert percist_category(10.0, None, 2.0, 1) == "PMD"
    with pytest.raises(ResponseError, match="measurable"):
        percist_category(None, 5.0, 2.0, 0)


def test_percist_measurability_edge():
    mean, sd = 2.0, 0.25
    threshold = PERCIST_LIVER_FACTOR * mean + PERCIST_SD_FACTOR * sd  # 3.5
    assert percist_baseline_target([threshold], mean, sd) is None  # at the threshold: not measurable
    assert percist_baseline_target([threshold + 0.01], mean, sd) == threshold + 0.01
    assert percist_baseline_target([1.0, threshold + 1.0, threshold + 0.5], mean, sd) == threshold + 1.0
    assert percist_baseline_target([], mean, sd) is None


def _liver(mean: float) -> LiverReference:
    return LiverReference((0, 0, 0), (0.0, 0.0, 0.0), 15.0, 100, mean, 0.1, True, True)


def test_percist_liver_agreement_edges():
    base = 2.0
    sul_edge = PERCIST_LIVER_AGREEMENT_SUL  # 0.3 < 20 % of 2.0: the SUL rule decides
    eps = 1e-9  # the edges themselves are decimal numbers that binary floats round
    assert liver_references_agree(_liver(base), _liver(base + sul_edge - eps))
    assert not liver_references_agree(_liver(base), _liver(base + sul_edge + 0.01))
    assert liver_references_agree(_liver(base), _liver(base - sul_edge + eps))
    assert not liver_references_agree(_liver(base), _liver(base - sul_edge - 0.01))
    small = 1.0  # 20 % of 1.0 = 0.2 < 0.3: the fraction rule decides
    edge = small * PERCIST_LIVER_AGREEMENT_FRACTION
    assert liver_references_agree(_liver(small), _liver(small + edge - eps))
    assert not liver_references_agree(_liver(small), _liver(small + edge + 0.01))


def test_recip_edges():
    base = 100.0
    assert recip_category(base, base * (1 + RECIP_PR_CHANGE), 0) == "PR"
    assert recip_category(base, base * (1 + RECIP_PR_CHANGE) + 0.1, 0) == "SD"
    assert recip_category(base, base * (1 + RECIP_PR_CHANGE), 1) == "SD"  # new lesion: not PR
    assert recip_category(base, base * (1 + RECIP_PD_CHANGE), 1) == "PD"
    assert recip_category(base, base * (1 + RECIP_PD_CHANGE) - 0.1, 1) == "SD"
    assert recip_category(base, base * 3, 0) == "SD"  # growth without a new lesion
    assert recip_category(base, 0.0, 0) == "CR"
    assert recip_category(base, 0.001, 0) == "PR"  # any tumour left: not CR
    assert recip_category(base, 0.0, 1) == "SD"
    with pytest.raises(ResponseError, match="empty"):
        recip_category(0.0, 1.0, 0)


def test_match_by_distance_and_threshold():
    labels_b = np.zeros((5, 5, 5), np.int32)
    labels_b[1, 1, 1] = 1
    mapped = np.zeros_like(labels_b)  # no overlap
    cb = np.array([[0.0, 0.0, 0.0]])
    near = match_lesions(labels_b, 1, mapped, cb, np.array([[10.0, 0.0, 0.0]]), max_distance_mm=15.0)
    assert [(p.status, p.matched_by) for p in near] == [("matched", "distance")]
    far = match_lesions(labels_b, 1, mapped, cb, np.array([[16.0, 0.0, 0.0]]), max_distance_mm=15.0)
    assert sorted(p.status for p in far) == ["disappeared", "new"]


def test_cli_response(tmp_path, capsys):
    from nnunet_quantif.cli import main

    b = make_case(tmp_path / "b", BASE_LESIONS[:1], seed=1, sul=False)
    f = make_case(tmp_path / "f", scaled_lesions(BASE_LESIONS[:1], 0, 0.6, 0.6), seed=2, sul=False)
    out = tmp_path / "out"
    argv = ["response", "--baseline", str(b), "--followup", str(f), "--out", str(out), "--criteria", "recip"]
    assert main([*argv, "--sex", "M", "--height", "1.8"]) == 0
    assert "RECIP: PR (1 matched, 0 new, 0 disappeared)" in capsys.readouterr().out
    data = json.loads((out / "response.json").read_text())
    assert data["category"] == "PR" and data["pet_units"]["baseline"] == "SUVbw"  # no weight_kg: SUVbw, flagged
    assert any("SUVbw" in flag for flag in data["flags"])
    assert (out / "followup_to_baseline.tfm").is_file() and (out / "lesions.csv").is_file()
    # an output folder that is an input file is refused before any work, the input kept
    before = (b / "ct.nii.gz").read_bytes()
    assert main(["response", "--baseline", str(b), "--followup", str(f), "--out", str(b / "ct.nii.gz")]) == 1
    assert "output folder is an existing file" in capsys.readouterr().err
    assert (b / "ct.nii.gz").read_bytes() == before
