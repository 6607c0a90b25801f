"""Notebook 04 (k-bit LinearQuant and LogQuant, bit-width sweep, shift ablation) runs
with tiny parameters, reproduces under nbval and writes sane results; the verdicts its
metrics record agree with an independent Welch computation on its per-seed tables."""
import json
import math

import pandas as pd
import pytest

from notebook_check import run_and_validate
from support import welch_reference

NAME = "04_round_quantization"
BITS = [1, 32]
VARIANTS = ["bn_adam", "bn_adamax", "shift_bn_shift_adamax"]  # every BN and optimizer kind
SMALL_PARAMS = dict(hidden=32, depth=1, n_train=300, n_val=200, n_test=300, epochs=1,
                    batch_size=100, error_bits=[1, 2, 4], bit_widths=BITS, sweep_repeats=2,
                    ablation_variants=VARIANTS, ablation_epochs=2, ablation_repeats=2,
                    tune_lr_grid=[0.003, 0.01], workers=2, threads=1)
MIN_SEEDS = 3  # the notebook's rule: fewer seeds per group draw no conclusion


def welch(a, b):
    """(difference, low, high, verdict) of mean(a) - mean(b), 95 % Welch interval."""
    difference, low, high = welch_reference(a, b)
    if math.isnan(low):
        return difference, None, None, "single run"
    verdict = "lower" if high < 0 else "higher" if low > 0 else "no clear difference"
    return difference, low, high, verdict


def test_independent_welch_against_hand_computation():
    """a = [1, 2, 3], b = [4, 5, 6]: difference -3, standard error sqrt(2/3), df = 4,
    t_0.975(4) = 2.7764 (tables), so the interval is -3 -+ 2.2669."""
    difference, low, high, verdict = welch([1, 2, 3], [4, 5, 6])
    assert (difference, verdict) == (-3, "lower")
    assert (low, high) == pytest.approx((-5.2669, -0.7331), abs=1e-4)
    assert welch([1, 2, 3], [1.5, 2.5, 2.0])[3] == "no clear difference"
    assert welch([1.0], [2.0, 3.0])[3] == "single run"


def assert_record_matches(record, a, b, where):
    """A recorded comparison equals the independent one on the raw per-seed values."""
    difference, low, high, verdict = welch(list(a), list(b))
    if min(len(a), len(b)) < MIN_SEEDS:
        verdict = "single run"   # the project's rule: no conclusion below 3 seeds a side
    assert record["n_a"] == len(a) and record["n_b"] == len(b), where
    assert record["difference_pct"] == pytest.approx(difference, abs=1e-3), where
    if low is None:
        assert record["ci_low_pct"] is None and record["ci_high_pct"] is None, where
    else:
        assert record["ci_low_pct"] == pytest.approx(low, abs=1e-3), where
        assert record["ci_high_pct"] == pytest.approx(high, abs=1e-3), where
    assert record["verdict"] == verdict, where
    return low, high, verdict


def no_loss(a, b, tolerance):
    """The notebook's claim wording, recomputed: conclusive only with >= 3 seeds each."""
    _, low, high, verdict = welch(list(a), list(b))
    if min(len(a), len(b)) < MIN_SEEDS:
        return "single run"
    if verdict == "higher":
        return "loss detected"
    if verdict == "lower":
        return "lower error"
    inside = -tolerance <= low and high <= tolerance
    return f"no loss detected within ±{tolerance:g} points" if inside else "inconclusive"


def check_recorded_verdicts(metrics: dict, sweep: pd.DataFrame, ablation: pd.DataFrame) -> None:
    """Every verdict in the metrics, recomputed from the per-seed tables."""
    def cell(w, a):
        return sweep[(sweep["w_bits"] == w) & (sweep["a_bits"] == a)].sort_values("seed")["test_error_pct"]

    bits = sorted(sweep["w_bits"].unique())
    fp, low_bits = bits[-1], bits[0]
    verdicts = metrics["sweep_verdicts"]
    assert set(verdicts["vs_full_precision"]) == {f"w{w}_a{a}" for w in bits for a in bits} - {f"w{fp}_a{fp}"}
    for key, record in verdicts["vs_full_precision"].items():
        w, a = (int(part[1:]) for part in key.split("_"))
        assert_record_matches(record, cell(w, a), cell(fp, fp), key)
    assert_record_matches(verdicts["weights_only_vs_activations_only"], cell(low_bits, fp), cell(fp, low_bits),
                          "weights vs activations")
    for (k, n) in zip(bits[:-1], bits[1:]):
        assert_record_matches(verdicts["diagonal"][f"w{k}_a{k}_vs_w{n}_a{n}"], cell(k, k), cell(n, n), (k, n))
    assert verdicts["conclusive"] == (sweep.groupby(["w_bits", "a_bits"]).size().min() >= MIN_SEEDS)

    def errors(variant):
        return ablation[ablation["variant"] == variant].sort_values("seed")["test_error_pct"]

    shift = metrics["shift_ablation_verdicts"]
    tolerance = shift["tolerance_pct"]
    assert set(shift["vs_bn_adam"]) == set(ablation["variant"]) - {"bn_adam"}
    for variant, record in shift["vs_bn_adam"].items():
        assert_record_matches(record, errors(variant), errors("bn_adam"), variant)
        assert record["no_loss_verdict"] == no_loss(errors(variant), errors("bn_adam"), tolerance), variant
    rounding = shift["shift_adamax_vs_adamax"]
    if {"bn_adamax", "bn_shift_adamax"} <= set(ablation["variant"]):
        assert_record_matches(rounding, errors("bn_shift_adamax"), errors("bn_adamax"), "rounding")
        assert rounding["no_loss_verdict"] == no_loss(errors("bn_shift_adamax"), errors("bn_adamax"), tolerance)
    else:
        assert rounding is None
    # the means recorded are the per-seed means
    for variant, mean in metrics["shift_ablation_test_error_pct"].items():
        assert mean == pytest.approx(errors(variant).mean(), abs=1e-3)
    for key, mean in metrics["sweep_test_error_pct"].items():
        w, a = (int(part[1:]) for part in key.split("_"))
        assert mean == pytest.approx(cell(w, a).mean(), abs=1e-3)


def test_verdict_check_fails_on_a_tampered_record():
    """The recomputation must be able to fail: a flipped verdict or a shifted interval."""
    sweep = pd.DataFrame({"w_bits": [1] * 3 + [32] * 3, "a_bits": [32] * 3 + [32] * 3,
                          "seed": [0, 1, 2] * 2, "test_error_pct": [3.0, 3.2, 3.1, 2.0, 2.1, 1.9]})
    sweep = pd.concat([sweep, sweep[sweep["w_bits"] == 32].assign(w_bits=32, a_bits=1)
                       .assign(test_error_pct=[2.5, 2.6, 2.4]),
                       sweep[sweep["w_bits"] == 32].assign(w_bits=1, a_bits=1)
                       .assign(test_error_pct=[5.0, 5.5, 4.5])])
    ablation = pd.DataFrame({"variant": ["bn_adam"] * 3 + ["bn_adamax"] * 3, "seed": [0, 1, 2] * 2,
                             "test_error_pct": [2.0, 2.1, 1.9, 2.05, 2.0, 2.0]})

    def record(a, b):
        difference, low, high, verdict = welch(list(a), list(b))
        return {"difference_pct": difference, "ci_low_pct": low, "ci_high_pct": high,
                "n_a": len(a), "n_b": len(b), "verdict": verdict}

    def cell(w, a):
        return sweep[(sweep["w_bits"] == w) & (sweep["a_bits"] == a)]["test_error_pct"]

    adamax, adam = ablation["test_error_pct"][3:], ablation["test_error_pct"][:3]
    metrics = {
        "sweep_verdicts": {"vs_full_precision": {f"w{w}_a{a}": record(cell(w, a), cell(32, 32))
                                                 for w, a in [(1, 1), (1, 32), (32, 1)]},
                           "weights_only_vs_activations_only": record(cell(1, 32), cell(32, 1)),
                           "diagonal": {"w1_a1_vs_w32_a32": record(cell(1, 1), cell(32, 32))},
                           "conclusive": True},
        "sweep_test_error_pct": {f"w{w}_a{a}": cell(w, a).mean() for w in (1, 32) for a in (1, 32)},
        "shift_ablation_verdicts": {"vs_bn_adam": {"bn_adamax": {**record(adamax, adam),
                                                                 "no_loss_verdict": no_loss(adamax, adam, 0.5)}},
                                    "shift_adamax_vs_adamax": None, "tolerance_pct": 0.5},
        "shift_ablation_test_error_pct": {"bn_adam": adam.mean(), "bn_adamax": adamax.mean()},
    }
    check_recorded_verdicts(metrics, sweep, ablation)  # consistent: passes
    assert metrics["shift_ablation_verdicts"]["vs_bn_adam"]["bn_adamax"]["no_loss_verdict"] == \
        "no loss detected within ±0.5 points"
    metrics["sweep_verdicts"]["vs_full_precision"]["w1_a32"]["verdict"] = "no clear difference"
    with pytest.raises(AssertionError, match="w1_a32"):
        check_recorded_verdicts(metrics, sweep, ablation)
    metrics["sweep_verdicts"]["vs_full_precision"]["w1_a32"]["verdict"] = "higher"
    metrics["shift_ablation_verdicts"]["vs_bn_adam"]["bn_adamax"]["ci_high_pct"] += 0.01
    with pytest.raises(AssertionError, match="bn_adamax"):
        check_recorded_verdicts(metrics, sweep, ablation)


@pytest.mark.slow
def test_round_quantization_notebook(tmp_path, monkeypatch):
    results = run_and_validate(NAME, SMALL_PARAMS, tmp_path, monkeypatch)

    metrics = json.loads((results / "metrics" / f"{NAME}.json").read_text())
    grid = metrics["sweep_test_error_pct"]
    assert set(grid) == {f"w{w}_a{a}" for w in BITS for a in BITS}
    assert all(0 <= value <= 100 for value in grid.values())
    assert set(metrics["shift_ablation_test_error_pct"]) == set(VARIANTS)
    assert all(0 <= v <= 100 for v in metrics["shift_ablation_test_error_pct"].values())
    assert set(metrics["tuned_lr"]) == {"Adam", "AdaMax"}
    assert all(lr in SMALL_PARAMS["tune_lr_grid"] for lr in metrics["tuned_lr"].values())
    for name in ("weights", "pre_activations"):
        errors = metrics["quant_rms_error"][name]
        assert set(errors) == {"linear_quant", "log"}
        # 1 bit: both quantizers are sign, so the same error; from 2 bits on linear improves
        # with bits (2-bit LinearQuant can be worse than sign: its top level is 1/2).
        assert errors["linear_quant"]["b1"] == pytest.approx(errors["log"]["b1"])
        assert errors["linear_quant"]["b4"] < errors["linear_quant"]["b2"]
        assert all(0 <= e <= 2 for q in errors.values() for e in q.values())

    tables = results / "tables"
    sweep = pd.read_csv(tables / f"{NAME}_sweep.csv")
    assert len(sweep) == len(BITS) ** 2 * 2 and sweep["test_error_pct"].between(0, 100).all()
    assert sorted(sweep["seed"].unique()) == [0, 1]
    quant = pd.read_csv(tables / f"{NAME}_quant_error.csv")
    assert len(quant) == 2 * 2 * 3 and (quant["relative_rms_error"] >= 0).all()
    ablation = pd.read_csv(tables / f"{NAME}_shift_ablation.csv")
    assert list(ablation["variant"].unique()) == VARIANTS and len(ablation) == 2 * len(VARIANTS)
    # each optimizer runs at the rate with its lowest validation error in the tuning table
    tuning = pd.read_csv(tables / f"{NAME}_lr_tuning.csv")
    assert list(tuning["lr_start"]) == 2 * SMALL_PARAMS["tune_lr_grid"] and (tuning["seed"] == 1000).all()
    for optimizer, rows in tuning.groupby("optimizer"):
        assert metrics["tuned_lr"][optimizer] == rows.loc[rows["best_val_error_pct"].idxmin(), "lr_start"]
    rates = ablation.groupby("variant")["lr_start"].first()
    assert rates["bn_adam"] == metrics["tuned_lr"]["Adam"]
    assert rates["bn_adamax"] == rates["shift_bn_shift_adamax"] == metrics["tuned_lr"]["AdaMax"]
    check_recorded_verdicts(metrics, sweep, ablation)
    # two seeds: no conclusion may be drawn
    assert not metrics["sweep_verdicts"]["conclusive"]
    assert all(r["no_loss_verdict"] == "single run" for r in metrics["shift_ablation_verdicts"]["vs_bn_adam"].values())

    curves = pd.read_csv(tables / f"{NAME}_shift_curves.csv")
    assert list(curves.columns) == ["epoch"] + VARIANTS and list(curves["epoch"]) == [1, 2]
    assert curves[VARIANTS].stack().between(0, 100).all()
    history = pd.read_csv(tables / f"{NAME}_shift_history.csv")
    assert len(history) == 2 * 2 * len(VARIANTS)

    for figure in ("04_quantizer_staircases", "04_quantization_error", "04_bitwidth_sweep",
                   "04_shift_ablation"):
        for suffix in (".png", ".pdf"):
            path = results / "figures" / f"{figure}{suffix}"
            assert path.exists() and path.stat().st_size > 1000, path
        assert figure in json.loads((results / "figures" / f"{figure[:2]}_captions.json").read_text())
