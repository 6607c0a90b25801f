"""Notebook 01 (deterministic vs stochastic binarization) runs with tiny parameters,
reproduces under nbval and writes sane results; the verdicts and conclusions it records
are recomputed here, independently, from its per-seed runs table."""
import json

import numpy as np
import pandas as pd
import pytest

from notebook_check import run_and_validate
from support import welch_reference as welch

NAME = "01_binarization"
COMBINATIONS = ["Wdet_Adet", "Wdet_Asto", "Wsto_Adet", "Wsto_Asto"]
SMALL_PARAMS = dict(hidden=32, depth=1, n_train=400, n_val=200, n_test=200, epochs=2, n_seeds=2,
                    mc_points=41, mc_draws=400, threads=1, workers=2)
MIN_SEEDS = 3
# what each recorded comparison compares: (a, column of a), (b, column of b); difference a - b
COMPARISONS = {
    "weights_with_deterministic_activations": (("Wdet_Adet", "test_error"), ("Wsto_Adet", "test_error")),
    "weights_with_stochastic_activations": (("Wdet_Asto", "test_error"), ("Wsto_Asto", "test_error")),
    "activations_with_deterministic_weights": (("Wdet_Adet", "test_error"), ("Wdet_Asto", "test_error")),
    "activations_with_stochastic_weights": (("Wsto_Adet", "test_error"), ("Wsto_Asto", "test_error")),
    "deterministic_vs_all_stochastic": (("Wdet_Adet", "test_error"), ("Wsto_Asto", "test_error")),
    "weight_cost_minus_activation_cost": (("Wsto_Adet", "test_error"), ("Wdet_Asto", "test_error")),
    "real_weights_with_deterministic_activations": (("Wsto_Adet", "test_error_real_weights"),
                                                    ("Wsto_Adet", "test_error")),
    "real_weights_with_stochastic_activations": (("Wsto_Asto", "test_error_real_weights"),
                                                 ("Wsto_Asto", "test_error")),
    "real_weights_vs_deterministic_weights": (("Wsto_Adet", "test_error_real_weights"), ("Wdet_Adet", "test_error")),
}


def expected_verdicts(runs):
    """Verdict of every comparison from the raw per-seed errors: Welch's interval, 3+ seeds."""
    verdicts = {}
    for key, ((a, column_a), (b, column_b)) in COMPARISONS.items():
        errors_a = runs.loc[runs["name"] == a, column_a].to_numpy()
        errors_b = runs.loc[runs["name"] == b, column_b].to_numpy()
        difference, low, high = welch(errors_a, errors_b)
        if min(len(errors_a), len(errors_b)) < MIN_SEEDS:
            label = "single run"
        else:
            label = "lower" if high < 0 else "higher" if low > 0 else "no clear difference"
        verdicts[key] = dict(a=a, a_metric=column_a, b=b, b_metric=column_b, n_a=len(errors_a), n_b=len(errors_b),
                             difference=100 * difference, low=100 * low, high=100 * high, verdict=label)
    return verdicts


def expected_conclusions(verdicts):
    """The recorded conclusions, from the verdicts (None: too few seeds to conclude)."""
    label = {key: record["verdict"] for key, record in verdicts.items()}
    if "single run" in label.values():
        return dict.fromkeys(["deterministic_at_least_as_good",
                              "stochastic_weights_cost_more_than_stochastic_activations",
                              "deterministic_best_or_within_noise", "real_weights_lower_than_binary",
                              "real_weights_still_above_deterministic_weights"])
    det_vs_sto = ["weights_with_deterministic_activations", "weights_with_stochastic_activations",
                  "activations_with_deterministic_weights", "activations_with_stochastic_weights"]
    detdet = ["weights_with_deterministic_activations", "activations_with_deterministic_weights",
              "deterministic_vs_all_stochastic"]
    return {
        "deterministic_at_least_as_good": all(label[k] != "higher" for k in det_vs_sto),
        "stochastic_weights_cost_more_than_stochastic_activations":
            label["weight_cost_minus_activation_cost"] == "higher",
        "deterministic_best_or_within_noise": all(label[k] != "higher" for k in detdet),
        "real_weights_lower_than_binary": label["real_weights_with_deterministic_activations"] == "lower"
        and label["real_weights_with_stochastic_activations"] == "lower",
        "real_weights_still_above_deterministic_weights": label["real_weights_vs_deterministic_weights"] == "higher",
    }


def check_verdicts(metrics, runs):
    """The verdicts and conclusions in the metrics follow from the raw per-seed errors."""
    expected = expected_verdicts(runs)
    assert set(metrics["verdicts"]) == set(expected)
    for key, want in expected.items():
        record = metrics["verdicts"][key]
        assert (record["a"], record["a_metric"], record["b"], record["b_metric"]) == \
            (want["a"], want["a_metric"], want["b"], want["b_metric"]), key
        assert (record["n_a"], record["n_b"]) == (want["n_a"], want["n_b"]), key
        assert record["difference_pct"] == pytest.approx(want["difference"], abs=1e-3), key
        assert record["ci_low_pct"] == pytest.approx(want["low"], abs=1e-3), key
        assert record["ci_high_pct"] == pytest.approx(want["high"], abs=1e-3), key
        assert record["verdict"] == want["verdict"], key
    assert metrics["conclusions"] == expected_conclusions(expected)


def test_check_verdicts_catches_a_wrong_verdict():
    rng = np.random.default_rng(0)
    rows = [dict(name=n, seed=s, test_error=0.05 + 0.01 * i + 0.001 * rng.standard_normal(),
                 test_error_real_weights=(0.04 + 0.001 * rng.standard_normal()) if n.startswith("Wsto") else np.nan)
            for i, n in enumerate(COMBINATIONS) for s in range(3)]
    runs = pd.DataFrame(rows)
    verdicts = {key: {"a": v["a"], "a_metric": v["a_metric"], "b": v["b"], "b_metric": v["b_metric"],
                      "n_a": v["n_a"], "n_b": v["n_b"], "difference_pct": v["difference"],
                      "ci_low_pct": v["low"], "ci_high_pct": v["high"], "verdict": v["verdict"]}
                for key, v in expected_verdicts(runs).items()}
    metrics = {"verdicts": verdicts, "conclusions": expected_conclusions(expected_verdicts(runs))}
    check_verdicts(metrics, runs)
    assert metrics["conclusions"]["deterministic_at_least_as_good"] is True
    verdicts["weights_with_deterministic_activations"]["verdict"] = "higher"
    with pytest.raises(AssertionError, match="weights_with_deterministic_activations"):
        check_verdicts(metrics, runs)


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
    low, high = metrics["mc_band_coverage_expected_range"]
    assert 0.7 < low <= metrics["mc_band_coverage"] <= high == 1

    tables = results / "tables"
    summary = pd.read_csv(tables / f"{NAME}_summary.csv")
    assert list(summary["name"]) == COMBINATIONS and (summary["seeds"] == 2).all()
    assert summary["test_error_pct_mean"].between(0, 100).all()
    assert summary.set_index("name")["test_error_pct_mean"].round(2).to_dict() == metrics["test_error_pct_mean"]
    runs = pd.read_csv(tables / f"{NAME}_runs.csv")
    assert len(runs) == 4 * 2 and runs["test_error"].between(0, 1).all()
    assert runs.loc[runs["weights"] == "deterministic", "test_error_real_weights"].isna().all()
    # two seeds: every comparison is recorded with its interval, and none draws a conclusion
    check_verdicts(metrics, runs)
    assert {record["verdict"] for record in metrics["verdicts"].values()} == {"single run"}
    assert set(metrics["conclusions"].values()) == {None}
    history = pd.read_csv(tables / f"{NAME}_history.csv")
    assert len(history) == 4 * 2 * 2 and history["val_error"].between(0, 1).all()

    for figure in ("01_hard_sigmoid", "01_sign_vs_expectation", "01_binarization_test_error"):
        for suffix in (".png", ".pdf"):
            path = results / "figures" / f"{figure}{suffix}"
            assert path.exists() and path.stat().st_size > 1000, path
        assert figure in json.loads((results / "figures" / f"{figure[:2]}_captions.json").read_text())
