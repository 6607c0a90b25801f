"""Notebook 04 (k-bit round and log quantization, bit-width sweep, shift ablation) runs
with tiny parameters, reproduces under nbval and writes sane results."""
import json

import pandas as pd
import pytest

from notebook_check import run_and_validate

NAME = "04_round_quantization"
BITS = [1, 32]
VARIANTS = ["bn_adam", "bn_adamax", "shift_bn_shift_adamax"]  # every BN and optimizer kind
SMALL_PARAMS = dict(hidden=32, depth=1, n_train=300, n_val=200, n_test=300, epochs=1,
                    batch_size=100, error_bits=[1, 2, 4], bit_widths=BITS, sweep_repeats=1,
                    ablation_variants=VARIANTS, ablation_epochs=2, threads=1)


@pytest.mark.slow
def test_round_quantization_notebook(tmp_path, monkeypatch):
    results = run_and_validate(NAME, SMALL_PARAMS, tmp_path, monkeypatch)

    metrics = json.loads((results / "metrics" / f"{NAME}.json").read_text())
    grid = metrics["sweep_test_error_pct"]
    assert set(grid) == {f"w{w}_a{a}" for w in BITS for a in BITS}
    assert all(0 <= value <= 100 for value in grid.values())
    assert set(metrics["shift_ablation_test_error_pct"]) == set(VARIANTS)
    assert all(0 <= v <= 100 for v in metrics["shift_ablation_test_error_pct"].values())
    for name in ("weights", "pre_activations"):
        errors = metrics["quant_rms_error"][name]
        assert set(errors) == {"linear", "log"}
        # 1 bit: both quantizers are sign, so the same error; linear improves with bits.
        assert errors["linear"]["b1"] == pytest.approx(errors["log"]["b1"])
        assert errors["linear"]["b4"] < errors["linear"]["b2"] < errors["linear"]["b1"]
        assert all(0 <= e <= 2 for q in errors.values() for e in q.values())

    tables = results / "tables"
    sweep = pd.read_csv(tables / f"{NAME}_sweep.csv")
    assert len(sweep) == len(BITS) ** 2 and sweep["test_error_pct"].between(0, 100).all()
    quant = pd.read_csv(tables / f"{NAME}_quant_error.csv")
    assert len(quant) == 2 * 2 * 3 and (quant["relative_rms_error"] >= 0).all()
    ablation = pd.read_csv(tables / f"{NAME}_shift_ablation.csv")
    assert list(ablation["variant"]) == VARIANTS
    curves = pd.read_csv(tables / f"{NAME}_shift_curves.csv")
    assert list(curves.columns) == ["epoch"] + VARIANTS and list(curves["epoch"]) == [1, 2]
    assert curves[VARIANTS].stack().between(0, 100).all()
    history = pd.read_csv(tables / f"{NAME}_shift_history.csv")
    assert len(history) == 2 * len(VARIANTS)

    for figure in ("04_quantizer_staircases", "04_quantization_error", "04_bitwidth_sweep",
                   "04_shift_ablation"):
        for suffix in (".png", ".pdf"):
            path = results / "figures" / f"{figure}{suffix}"
            assert path.exists() and path.stat().st_size > 1000, path
        assert figure in json.loads((results / "figures" / f"{figure[:2]}_captions.json").read_text())
