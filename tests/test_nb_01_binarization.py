"""Notebook 01 (deterministic vs stochastic binarization) runs with tiny parameters,
reproduces under nbval and writes sane results."""
import json

import pandas as pd
import pytest

from notebook_check import run_and_validate

NAME = "01_binarization"
COMBINATIONS = ["Wdet_Adet", "Wdet_Asto", "Wsto_Adet", "Wsto_Asto"]
SMALL_PARAMS = dict(hidden=32, depth=1, n_train=400, n_val=200, n_test=200, epochs=2, n_seeds=2,
                    mc_points=41, mc_draws=400, threads=1)


@pytest.mark.slow
def test_binarization_notebook(tmp_path, monkeypatch):
    results = run_and_validate(NAME, SMALL_PARAMS, tmp_path, monkeypatch)

    metrics = json.loads((results / "metrics" / f"{NAME}.json").read_text())
    assert metrics["seeds"] == 2 and metrics["epochs"] == 2
    assert set(metrics["test_error_pct_mean"]) == set(COMBINATIONS)
    assert all(0 <= v <= 100 for v in metrics["test_error_pct_mean"].values())
    assert all(v >= 0 for v in metrics["test_error_pct_std"].values())
    assert set(metrics["real_weights_test_error_pct_mean"]) == {"Wsto_Adet", "Wsto_Asto"}
    assert all(0 <= v <= 100 for v in metrics["real_weights_test_error_pct_mean"].values())
    # 400 draws: the Monte-Carlo mean is within a few standard errors (<= 0.05) of the hard tanh
    assert 0 <= metrics["mc_max_abs_deviation"] < 0.2
    assert 0.8 <= metrics["mc_band_coverage"] <= 1

    tables = results / "tables"
    summary = pd.read_csv(tables / f"{NAME}_summary.csv")
    assert list(summary["name"]) == COMBINATIONS and (summary["seeds"] == 2).all()
    assert summary["test_error_pct_mean"].between(0, 100).all()
    assert summary.set_index("name")["test_error_pct_mean"].round(2).to_dict() == metrics["test_error_pct_mean"]
    runs = pd.read_csv(tables / f"{NAME}_runs.csv")
    assert len(runs) == 4 * 2 and runs["test_error"].between(0, 1).all()
    assert runs.loc[runs["weights"] == "deterministic", "test_error_real_weights"].isna().all()
    history = pd.read_csv(tables / f"{NAME}_history.csv")
    assert len(history) == 4 * 2 * 2 and history["val_error"].between(0, 1).all()

    for figure in ("01_hard_sigmoid", "01_sign_vs_expectation", "01_binarization_test_error"):
        for suffix in (".png", ".pdf"):
            path = results / "figures" / f"{figure}{suffix}"
            assert path.exists() and path.stat().st_size > 1000, path
        assert figure in json.loads((results / "figures" / f"{figure[:2]}_captions.json").read_text())
