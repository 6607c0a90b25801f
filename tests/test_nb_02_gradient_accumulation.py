"""Notebook 02 (gradient accumulation: accumulator formats, stochastic rounding, lost updates,
dropout vs binarization) runs with tiny parameters, reproduces under nbval, writes sane
results, and records verdicts that an independent recomputation from its per-seed tables
confirms."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from notebook_check import run_and_validate
from qnnpipeline.notebooks import run_notebook
from support import mnist_mirror
from support import welch_reference as welch

NAME = "02_gradient_accumulation"
SWEEP = ["float32", "bfloat16", "fixed4", "fixed8"]
FORMATS = SWEEP + ["fixed4-sr"]
SEEDS = [0, 1, 2]
SMALL_PARAMS = dict(hidden=32, depth=1, n_train=300, n_val=200, n_test=300, epochs=2,
                    batch_size=100, float_formats=["float32", "bfloat16"], fixed_bits=[4, 8],
                    sr_bits=[4], toy_steps=200, threads=1, n_seeds=len(SEEDS), workers=2)
MODELS = ["full_precision", "full_precision_dropout", "bnn", "bnn_dropout"]
LABELS = {"full_precision": "full precision", "full_precision_dropout": "full precision + dropout",
          "bnn": "BNN", "bnn_dropout": "BNN + dropout"}
NO_VERDICT = ("single run",)


def expected_record(a, b, tolerance):
    """What the notebook must record for per-seed values a against b."""
    difference, low, high = welch(a, b, 0.95)
    _, low90, high90 = welch(a, b, 0.90)
    n = min(len(a), len(b))
    if n < 3:
        verdict, equivalent = "single run", None
    else:
        verdict = "lower" if high < 0 else "higher" if low > 0 else "no clear difference"
        equivalent = bool(-tolerance <= low90 and high90 <= tolerance)
    return {"difference": difference, "ci95": (low, high), "ci90": (low90, high90),
            "verdict": verdict, "equivalent": equivalent, "n": [len(a), len(b)]}


def assert_record_matches(recorded, expected, what):
    assert recorded["difference_pct"] == pytest.approx(expected["difference"], abs=1e-3), what
    intervals = {"ci95": (recorded["ci_low_pct"], recorded["ci_high_pct"]), "ci90": recorded["ci90_pct"]}
    for key, interval in intervals.items():
        for got, want in zip(interval, expected[key]):
            if math.isnan(want):
                assert got is None, what
            else:
                assert got == pytest.approx(want, abs=2e-3), (what, key)
    assert [recorded["n_a"], recorded["n_b"]] == expected["n"], what
    assert recorded["verdict"] == expected["verdict"], what
    assert recorded["equivalent"] == expected["equivalent"], what


def test_expected_record_of_a_clear_difference():
    record = expected_record([1, 2, 3], [4, 5, 6], tolerance=0.5)
    assert record["verdict"] == "lower" and record["equivalent"] is False
    assert expected_record([1.0, 1.1, 0.9], [1.0, 1.05, 0.95], tolerance=0.5)["equivalent"] is True
    assert expected_record([1.0], [2.0], tolerance=0.5)["verdict"] == "single run"


# -- the notebook -----------------------------------------------------------------------

def check_verdicts_against_tables(results, metrics):
    """Recompute every recorded verdict from the per-seed CSVs the notebook wrote."""
    tolerance = metrics["config"]["tolerance_pct"]
    formats = pd.read_csv(results / "tables" / f"{NAME}_formats.csv")
    errors = {fmt: rows.sort_values("seed")["test_error_pct"].to_numpy()
              for fmt, rows in formats.groupby("format")}
    for fmt, recorded in metrics["vs_float32"].items():
        assert_record_matches(recorded, expected_record(errors[fmt], errors["float32"], tolerance), fmt)
    # the smallest k equivalent to float32 together with every larger k tried
    enough = None
    for k in sorted((int(f[5:]) for f in errors if f.startswith("fixed") and not f.endswith("-sr")),
                    reverse=True):
        if not expected_record(errors[f"fixed{k}"], errors["float32"], tolerance)["equivalent"]:
            break
        enough = k
    assert metrics["min_fixed_bits_within_tolerance"] == enough
    for name, record in metrics["stochastic_rounding"].items():
        nearest = name.removesuffix("-sr")
        assert_record_matches(record["vs_round_to_nearest"],
                              expected_record(errors[name], errors[nearest], tolerance), name)
        assert record["vs_float32"] == metrics["vs_float32"][name]
    for fmt, summary in metrics["test_error_pct"].items():
        assert summary["mean"] == pytest.approx(errors[fmt].mean(), abs=1e-3)
        assert summary["sd"] == pytest.approx(errors[fmt].std(ddof=1) if len(errors[fmt]) > 1 else 0,
                                              abs=1e-3)
    lost = formats.groupby("format")["lost_update_pct"].mean()
    for fmt, summary in metrics["lost_update_pct"].items():
        assert summary["mean"] == pytest.approx(lost[fmt], abs=1e-3)

    dropout = pd.read_csv(results / "tables" / f"{NAME}_dropout.csv")
    np.testing.assert_allclose(dropout["gap_pct"], dropout["test_error_pct"] - dropout["train_error_pct"],
                               atol=1e-6)
    values = lambda model, column: (dropout[dropout["model"] == model].sort_values("seed")[column]
                                    .to_numpy())
    for question, recorded in metrics["dropout_verdicts"].items():
        expected = expected_record(values(recorded["a"], recorded["quantity"]),
                                   values(recorded["b"], recorded["quantity"]), tolerance)
        assert_record_matches(recorded, expected, question)
    for key, label in LABELS.items():
        for column in ("train_error_pct", "test_error_pct", "gap_pct"):
            assert metrics["dropout"][key][column]["mean"] == pytest.approx(
                values(label, column).mean(), abs=1e-3)


def generated_text(executed) -> str:
    """The Markdown and printed text the executed notebook produced (its outputs only)."""
    cells = json.loads(executed.read_text())["cells"]
    outputs = [output for cell in cells for output in cell.get("outputs", [])]
    return "".join("".join(output.get("data", {}).get("text/markdown", output.get("text", "")))
                   for output in outputs)


@pytest.mark.slow
def test_gradient_accumulation_notebook(tmp_path, monkeypatch):
    results = run_and_validate(NAME, SMALL_PARAMS, tmp_path, monkeypatch)

    metrics = json.loads((results / "metrics" / f"{NAME}.json").read_text())
    assert metrics["n_seeds"] == 3 and metrics["seeds"] == SEEDS and metrics["conclusive"] is True
    assert list(metrics["test_error_pct"]) == FORMATS
    assert all(0 <= v["mean"] <= 100 and v["n"] == 3 for v in metrics["test_error_pct"].values())
    lost = {fmt: v["mean"] for fmt, v in metrics["lost_update_pct"].items()}
    assert list(lost) == FORMATS and lost["float32"] == 0
    assert all(0 <= v <= 100 for v in lost.values())
    # 4 fractional bits swallow more updates than 8 (coarser grid, same steps)
    assert lost["fixed4"] > lost["fixed8"] > 0
    assert set(metrics["dropout"]) == set(MODELS)
    assert metrics["min_fixed_bits_within_tolerance"] in (None, 4, 8)
    verdicts = [r["verdict"] for r in metrics["vs_float32"].values()]
    verdicts += [r["verdict"] for r in metrics["dropout_verdicts"].values()]
    assert set(verdicts) <= {"lower", "higher", "no clear difference"}
    check_verdicts_against_tables(results, metrics)

    tables = results / "tables"
    formats = pd.read_csv(tables / f"{NAME}_formats.csv")
    assert list(formats["format"]) == [f for f in FORMATS for _ in SEEDS]
    assert list(formats["seed"]) == SEEDS * len(FORMATS)
    assert list(formats.drop_duplicates("format")["resolution_bits"]) == [24, 8, 4, 8, 4]
    assert list(formats.drop_duplicates("format")["storage_bits"]) == [32, 16, 6, 10, 6]
    assert list(formats.drop_duplicates("format")["rounding"]) == ["nearest"] * 4 + ["stochastic"]
    assert formats["test_error_pct"].between(0, 100).all()
    assert (formats.loc[formats["format"] == "float32", "sign_flips_vs_float32"] == 1).all()
    dropout = pd.read_csv(tables / f"{NAME}_dropout.csv")
    assert len(dropout) == 4 * len(SEEDS)
    # the BNN without dropout is the float32 run of the sweep, seed by seed
    np.testing.assert_allclose(dropout[dropout["model"] == "BNN"]["test_error_pct"],
                               formats[formats["format"] == "float32"]["test_error_pct"])
    lost_curves = pd.read_csv(tables / f"{NAME}_lost_by_epoch.csv")
    assert list(lost_curves.columns) == ["epoch", "lr"] + FORMATS
    assert list(lost_curves["epoch"]) == [1, 2] and (lost_curves["float32"] == 0).all()
    assert lost_curves[FORMATS].stack().between(0, 100).all()
    curves = pd.read_csv(tables / f"{NAME}_test_error_curves.csv")
    assert list(curves.columns) == ["epoch"] + FORMATS and len(curves) == 2

    for figure in ("02_toy_accumulator", "02_accumulator_bits", "02_lost_updates_by_epoch",
                   "02_lost_by_magnitude", "02_dropout_vs_binarization"):
        for suffix in (".png", ".pdf"):
            path = results / "figures" / f"{figure}{suffix}"
            assert path.exists() and path.stat().st_size > 1000, path
        assert figure in json.loads((results / "figures" / f"{figure[:2]}_captions.json").read_text())

    # the findings are generated: the executed notebook states the recorded verdicts
    markdown = generated_text(tmp_path / f"{NAME}.ipynb")
    assert "## What we found" in markdown
    for fmt, record in metrics["vs_float32"].items():
        assert record["text"] in markdown, fmt


@pytest.mark.slow
def test_single_seed_run_draws_no_conclusion(tmp_path, monkeypatch):
    """With one seed every verdict is "single run", nothing is declared enough or equivalent,
    and the generated text says so."""
    monkeypatch.setenv("QNN_DATA_MIRROR", str(mnist_mirror()))
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path / "results"))
    params = {**SMALL_PARAMS, "n_seeds": 1, "workers": 1, "float_formats": ["float32"],
              "fixed_bits": [4], "epochs": 1}
    executed = run_notebook(NAME, params, output_dir=tmp_path)
    metrics = json.loads((tmp_path / "results" / "metrics" / f"{NAME}.json").read_text())
    assert metrics["conclusive"] is False and metrics["min_fixed_bits_within_tolerance"] is None
    records = [*metrics["vs_float32"].values(), *metrics["dropout_verdicts"].values(),
               metrics["stochastic_rounding"]["fixed4-sr"]["vs_round_to_nearest"]]
    assert all(r["verdict"] == "single run" and r["equivalent"] is None for r in records)
    check_verdicts_against_tables(tmp_path / "results", metrics)
    text = generated_text(executed)
    assert "no conclusion" in text and "no verdict on stochastic rounding" in text
    assert "recovers float32 accuracy" not in text
