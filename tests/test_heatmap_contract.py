"""The heatmap contract: the definition written by convert, read back from a model, and checked against options."""

from __future__ import annotations

import json
import logging

import pytest

from nnunet_quantif.errors import ConfigError
from nnunet_quantif.heatmap_definition import (
    DATASET_KEY,
    HeatmapDefinition,
    explicit_heatmap_params,
    quantif_dataset_entry,
    read_model_definition,
    resolve_definition,
)


def _model_dir(tmp_path, entry: dict | None):
    ds = {"channel_names": {"0": "CT", "1": "CT", "2": "noNorm"}, "labels": {"background": 0, "lesion": 1}}
    if entry is not None:
        ds[DATASET_KEY] = entry
    (tmp_path / "dataset.json").write_text(json.dumps(ds))
    return tmp_path


def test_definition_round_trips_through_dataset_json(tmp_path) -> None:
    d = HeatmapDefinition.from_params({"suv_gate": 4.0, "background_mode": "authors", "sigma_tumor": (2, 3, 3)},
                                      click_step=5)
    model = _model_dir(tmp_path, quantif_dataset_entry(d, "CT"))
    back, found = read_model_definition(model)
    assert found and back == d
    assert back.params() == {"sigma_tumor": (2.0, 3.0, 3.0), "sigma_background": (6.0, 6.0, 6.0),
                             "suv_gate": 4.0, "background_mode": "authors", "truncate": 4.0}
    assert back.click_policy == "first_k" and back.click_step == 5


def test_model_without_the_key_falls_back_to_defaults_with_one_warning(tmp_path, caplog) -> None:
    model = _model_dir(tmp_path, None)
    d, found = read_model_definition(model)
    assert not found and d == HeatmapDefinition()
    with caplog.at_level(logging.WARNING):
        out = resolve_definition(d, found, {"suv_gate": 4.0}, source=str(model))
    assert out.suv_gate == 4.0  # no recorded definition: the options given are used
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "no 'quantif' heatmap definition" in warnings[0].getMessage()


def test_contradicting_option_is_an_error_unless_forced(tmp_path) -> None:
    d = HeatmapDefinition.from_params({"suv_gate": 4.0})
    with pytest.raises(ConfigError, match=r"suv_gate 3 \(model: 4\).*--force-heatmap"):
        resolve_definition(d, True, explicit_heatmap_params(suv_gate=3.0), source="M")
    assert resolve_definition(d, True, explicit_heatmap_params(suv_gate=3.0), force=True).suv_gate == 3.0
    # restating the model's own values is fine, and a scalar sigma equals its 3-vector
    same = resolve_definition(d, True, explicit_heatmap_params(sigma_tumor=3.0, suv_gate=4.0))
    assert same == d
    with pytest.raises(ConfigError, match="background_mode authors"):
        resolve_definition(d, True, explicit_heatmap_params(background_mode="authors"))


@pytest.mark.parametrize("entry, message", [
    ({"heatmap": {"mode": "disk"}}, "unknown heatmap mode"),
    ({"heatmap": {"background_mode": "other"}}, "unknown heatmap background_mode"),
    ({"heatmap": {"sigma_tumor": [1, 2]}}, "sigma_tumor must be 1 or 3"),
    ({"heatmap": {"click_policy": "first_k"}}, "click_policy"),
    ({"nothing": 1}, "'heatmap' entry"),
])
def test_malformed_entry_names_the_file(tmp_path, entry, message) -> None:
    model = _model_dir(tmp_path, entry)
    with pytest.raises(ConfigError, match=message) as e:
        read_model_definition(model)
    assert str(tmp_path / "dataset.json") in str(e.value)


def test_unknown_pet_normalisation_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown PET normalisation"):
        quantif_dataset_entry(HeatmapDefinition(), "ZScore")


def test_predict_cli_refuses_a_contradicting_flag_before_loading(tmp_path, capsys) -> None:
    """``quantif predict --suv-gate 3`` on a model trained with tau 4 stops with one line, before any model work."""
    from nnunet_quantif.cli import main

    (tmp_path / "m").mkdir()
    model = _model_dir(tmp_path / "m", quantif_dataset_entry(HeatmapDefinition.from_params({"suv_gate": 4}), "CT"))
    (model / "fold_0").mkdir()
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"x")
    (model / "plans.json").write_text("{}")
    rc = main(["predict", "--ct", str(tmp_path / "ct.nii.gz"), "--pet", str(tmp_path / "pet.nii.gz"),
               "--out", str(tmp_path / "o.nii.gz"), "--model-fdg", str(model), "--folds", "0", "--tracer", "fdg",
               "--suv-gate", "3"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "suv_gate 3 (model: 4)" in err and "--force-heatmap" in err
