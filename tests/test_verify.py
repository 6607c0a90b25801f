"""`make verify` (qnnpipeline.verify): this machine against the committed fingerprints.

The fast check runs here, in the suite, so CI on whatever CPU it gets catches drift: a
different MKL branch, ATen kernel, library version or training code changes a hash."""
import io
import json
import os
import subprocess
import sys

import pytest

from qnnpipeline import paths, verify

ROOT = paths.root()


def test_fast_check_equals_the_committed_fingerprints():
    run = subprocess.run([sys.executable, "-m", "qnnpipeline.verify", "--fast"], cwd=ROOT,
                         env=os.environ.copy(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "identical" in run.stdout
    assert "numerics: portable (MKL branch COMPATIBLE,STRICT, ATen AVX2)" in run.stdout


def committed():
    return json.loads((ROOT / "results" / "reproducibility" / "fingerprints.json").read_text())


def test_committed_fingerprints_cover_every_check_and_were_pinned():
    record = committed()
    assert set(record["runs"]) == {name for name, _, _ in verify.TRAININGS}
    assert len(record["workload"]) >= 12
    numerics = record["provenance"]["numerics"]
    assert (numerics["profile"], numerics["mkl_branch"], numerics["aten_capability"]) == \
        ("portable", "COMPATIBLE,STRICT", "AVX2")


def test_identical_records_report_identical():
    record = committed()
    out = io.StringIO()
    assert verify.report(record, json.loads(json.dumps(record)), out) == 0
    assert out.getvalue().startswith("identical")


def test_the_first_difference_is_named_with_both_values():
    record = committed()
    measured = json.loads(json.dumps(record))
    measured["workload"]["batch norm backward"] = "0" * 16
    measured["runs"]["verify"]["history"][1] += "9"
    out = io.StringIO()
    assert verify.report(record, measured, out) == 1
    text = out.getvalue()
    assert "DIFFERENT: 2 of" in text
    assert f"workload.batch norm backward: committed {record['workload']['batch norm backward']}, here 0000000000000000" in text


def test_a_value_missing_from_the_committed_file_is_a_difference():
    record = committed()
    measured = json.loads(json.dumps(record))
    measured["workload"]["a new operation"] = "abc"
    assert verify.differences(record, measured) == ["workload.a new operation: committed (absent), here abc"]


def test_flatten_names_every_leaf():
    assert verify.flatten({"a": {"b": [1, {"c": 2}]}, "d": 3}) == {"a.b[0]": 1, "a.b[1].c": 2, "d": 3}


@pytest.mark.parametrize("stem", sorted(p.stem for p in (ROOT / "results" / "metrics").glob("*.json")))
def test_every_committed_result_records_its_numerics(stem):
    metrics = json.loads((ROOT / "results" / "metrics" / f"{stem}.json").read_text())
    if metrics.get("status") == "pending" or "provenance" not in metrics:
        pytest.skip("a placeholder for a run that needs a GPU")
    numerics = metrics["provenance"]["numerics"]
    expected = "native" if stem.startswith("06_") else "portable"  # 06 times the fastest path
    assert numerics["profile"] == expected
    if expected == "portable":
        assert numerics["MKL_CBWR"] == "COMPATIBLE,STRICT"
        assert numerics["ATEN_CPU_CAPABILITY"] == "avx2"
        assert numerics.get("mkl_branch") in (None, "COMPATIBLE,STRICT")  # None: a runner's record


def test_fingerprints_and_committed_budget_runs_share_their_first_epoch():
    """The budget check runs repeat the committed budget runs' first epoch: the two
    committed files must agree, or one of them was made by other code or numerics."""
    record = committed()
    committed_epochs, measured_epochs = verify.budget_first_epochs(record["runs"])
    assert set(committed_epochs["budget_first_epoch"]) == {"mnist_cpu", "mnist_fp"}
    assert verify.differences(committed_epochs, measured_epochs) == []
