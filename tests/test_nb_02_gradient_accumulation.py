"""Notebook 02 (gradient accumulation: accumulator formats, lost updates, dropout vs
binarization) runs with tiny parameters, reproduces under nbval and writes sane results."""
import json

import pandas as pd
import pytest

from notebook_check import run_and_validate

NAME = "02_gradient_accumulation"
FORMATS = ["float32", "bfloat16", "fixed4", "fixed8"]
SMALL_PARAMS = dict(hidden=32, depth=1, n_train=300, n_val=200, n_test=300, epochs=2,
                    batch_size=100, float_formats=["float32", "bfloat16"], fixed_bits=[4, 8],
                    toy_steps=200, threads=1)
MODELS = ["full_precision", "full_precision_dropout", "bnn", "bnn_dropout"]


@pytest.mark.slow
def test_gradient_accumulation_notebook(tmp_path, monkeypatch):
    results = run_and_validate(NAME, SMALL_PARAMS, tmp_path, monkeypatch)

    metrics = json.loads((results / "metrics" / f"{NAME}.json").read_text())
    assert list(metrics["test_error_pct"]) == FORMATS
    assert all(0 <= v <= 100 for v in metrics["test_error_pct"].values())
    lost = metrics["lost_update_fraction"]
    assert list(lost) == FORMATS and lost["float32"] == 0
    assert all(0 <= v <= 1 for v in lost.values())
    # 4 fractional bits swallow more updates than 8 (coarser grid, same steps)
    assert lost["fixed4"] > lost["fixed8"] > 0
    assert set(metrics["dropout"]) == set(MODELS)
    for row in metrics["dropout"].values():
        assert 0 <= row["train_error_pct"] <= 100 and 0 <= row["test_error_pct"] <= 100
        assert row["gap_pct"] == pytest.approx(row["test_error_pct"] - row["train_error_pct"], abs=0.02)
    assert metrics["min_fixed_bits_within_tolerance"] in (None, 4, 8)

    tables = results / "tables"
    formats = pd.read_csv(tables / f"{NAME}_formats.csv")
    assert list(formats["format"]) == FORMATS
    assert list(formats["resolution_bits"]) == [24, 8, 4, 8]
    assert list(formats["storage_bits"]) == [32, 16, 6, 10]
    assert formats["test_error_pct"].between(0, 100).all()
    dropout = pd.read_csv(tables / f"{NAME}_dropout.csv")
    assert len(dropout) == 4
    lost_curves = pd.read_csv(tables / f"{NAME}_lost_by_epoch.csv")
    assert list(lost_curves.columns) == ["epoch", "lr"] + FORMATS
    assert list(lost_curves["epoch"]) == [1, 2] and (lost_curves["float32"] == 0).all()
    assert lost_curves[FORMATS].stack().between(0, 100).all()
    curves = pd.read_csv(tables / f"{NAME}_test_error_curves.csv")
    assert list(curves.columns) == ["epoch"] + FORMATS and len(curves) == 2

    for figure in ("02_toy_accumulator", "02_accumulator_bits", "02_lost_updates_by_epoch",
                   "02_dropout_vs_binarization"):
        for suffix in (".png", ".pdf"):
            path = results / "figures" / f"{figure}{suffix}"
            assert path.exists() and path.stat().st_size > 1000, path
        assert figure in json.loads((results / "figures" / f"{figure[:2]}_captions.json").read_text())
