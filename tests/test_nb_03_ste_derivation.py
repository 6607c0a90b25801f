"""Notebook 03 (the straight-through estimator: derivation, noise share, gradient of the
expected loss, saturation ablation) runs with tiny parameters, reproduces under nbval and
writes sane results."""
import json

import pandas as pd
import pytest

from notebook_check import run_and_validate

NAME = "03_ste_derivation"
WIDTHS = [16, 256]
SMALL_PARAMS = dict(mc_points=41, mc_draws=200,
                    noise_widths=WIDTHS, noise_alignments=[0.0, 1.0], noise_inputs=4, noise_units=4,
                    noise_draws=16,
                    grad_widths=WIDTHS, grad_alignments=[0.0, 0.3], grad_problems=2, grad_draws=64,
                    hidden=32, depth=1, n_train=400, n_val=200, n_test=200, epochs=2, n_seeds=2,
                    threads=1)
ESTIMATORS = ["ste_one_draw", "ste_mean", "hard_tanh_surrogate", "ste_unsaturated"]


@pytest.mark.slow
def test_ste_derivation_notebook(tmp_path, monkeypatch):
    results = run_and_validate(NAME, SMALL_PARAMS, tmp_path, monkeypatch)

    metrics = json.loads((results / "metrics" / f"{NAME}.json").read_text())
    assert set(metrics["ablation"]) == {"saturated", "unsaturated"}
    for variant in metrics["ablation"].values():
        assert all(0 <= variant[key] <= 100 for key in
                   ("test_error_pct_mean", "final_test_error_pct_mean", "best_val_error_pct_mean"))
    ratios = metrics["noise_to_signal"]
    assert set(ratios) == {"rho_0", "rho_1"} and set(ratios["rho_1"]) == {"n16", "n256"}
    # weights aligned with the input: the noise share falls with width (like 1/sqrt(n))
    assert ratios["rho_1"]["n256"] < ratios["rho_1"]["n16"] < ratios["rho_0"]["n16"]
    assert metrics["noise_to_signal_loglog_slope"]["rho_1"] == pytest.approx(-0.5, abs=0.15)
    cosines = metrics["gradient_cosine"]
    assert set(cosines) == {"rho_0", "rho_0p3"}
    for by_estimator in cosines.values():
        assert set(by_estimator) == set(ESTIMATORS)
        assert all(-1 <= c <= 1 for widths in by_estimator.values() for c in widths.values())
        # the saturated mean STE is close to the exact gradient, the unsaturated one is not
        assert by_estimator["ste_mean"]["n256"] > 0.95
        assert by_estimator["ste_mean"]["n256"] > by_estimator["ste_unsaturated"]["n256"]

    tables = results / "tables"
    curves = pd.read_csv(tables / f"{NAME}_learning_curves.csv")
    assert list(curves.columns) == ["epoch", "saturated", "unsaturated"]
    assert list(curves["epoch"]) == [1, 2] and curves[["saturated", "unsaturated"]].stack().between(0, 100).all()
    history = pd.read_csv(tables / f"{NAME}_ablation_history.csv")
    assert len(history) == 2 * 2 * 2
    noise = pd.read_csv(tables / f"{NAME}_noise_to_signal.csv")
    assert len(noise) == 2 * len(WIDTHS) and (noise[["R_monte_carlo", "R_exact_variance"]] > 0).all().all()
    cos = pd.read_csv(tables / f"{NAME}_gradient_cosine.csv")
    assert len(cos) == 2 * 5 * len(WIDTHS) and cos["cosine"].between(-1, 1).all()

    for figure in ("03_sign_gradient", "03_expected_binarization", "03_noise_share_vs_width",
                   "03_ste_vs_expected_gradient", "03_saturation_learning_curves"):
        for suffix in (".png", ".pdf"):
            path = results / "figures" / f"{figure}{suffix}"
            assert path.exists() and path.stat().st_size > 1000, path
        assert figure in json.loads((results / "figures" / f"{figure[:2]}_captions.json").read_text())
