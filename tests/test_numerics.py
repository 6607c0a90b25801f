"""Pinned numerics (`qnnlib.numerics`): every pipeline process computes with MKL's
COMPATIBLE branch and ATen's AVX2 kernels, says so in its provenance, and warns when torch
computed before the settings could apply. Each case runs in a fresh interpreter: the
libraries read their settings once per process."""
import json
import os
import subprocess
import sys

import pytest
import torch

from qnnlib import numerics
from qnnlib.provenance import provenance

HAS_MKL = torch.backends.mkl.is_available()
HAS_AVX2 = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def fresh_python(code: str, **env) -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter whose environment has none of the pinned variables
    (this test process has them) plus `env`."""
    clean = {k: v for k, v in os.environ.items()
             if k not in (numerics.ENV, *numerics.PROFILES["portable"])}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


SETTINGS = "import json, torch; torch.ones(8, 8) @ torch.ones(8, 8); from qnnlib import numerics; print(json.dumps(numerics.settings()))"


@pytest.mark.skipif(not (HAS_MKL and HAS_AVX2), reason="needs torch with MKL on an AVX2 CPU")
def test_importing_the_pipeline_pins_mkl_and_aten():
    run = fresh_python("import qnnpipeline\n" + SETTINGS)
    used = json.loads(run.stdout.splitlines()[-1])
    assert used["profile"] == "portable"
    assert used["mkl_branch"] == "COMPATIBLE,STRICT"
    assert used["aten_capability"] == "AVX2"
    assert "RuntimeWarning" not in run.stderr


@pytest.mark.skipif(not HAS_MKL, reason="needs torch with MKL")
def test_native_profile_leaves_each_library_its_default():
    run = fresh_python("import qnnpipeline\n" + SETTINGS, QNN_NUMERICS="native")
    used = json.loads(run.stdout.splitlines()[-1])
    assert used["profile"] == "native"
    assert used["MKL_CBWR"] is None and used["ATEN_CPU_CAPABILITY"] is None
    assert used["mkl_branch"] != "COMPATIBLE,STRICT"


@pytest.mark.skipif(not (HAS_MKL and HAS_AVX2), reason="needs torch with MKL on an AVX2 CPU")
def test_torch_computing_first_warns_and_names_the_fix():
    run = fresh_python("import torch\ntorch.ones(8, 8) @ torch.ones(8, 8)\nimport qnnpipeline\n")
    assert run.returncode == 0, run.stderr
    assert "RuntimeWarning" in run.stderr
    assert "import qnnpipeline before torch" in run.stderr
    assert "MKL_CBWR=COMPATIBLE,STRICT" in run.stderr


@pytest.mark.skipif(not (HAS_MKL and HAS_AVX2), reason="needs torch with MKL on an AVX2 CPU")
def test_torch_imported_but_idle_is_still_in_time():
    run = fresh_python("import torch\nimport qnnpipeline\n" + SETTINGS)
    used = json.loads(run.stdout.splitlines()[-1])
    assert used["mkl_branch"] == "COMPATIBLE,STRICT"
    assert "RuntimeWarning" not in run.stderr


def test_unknown_profile_is_refused(monkeypatch):
    monkeypatch.setenv(numerics.ENV, "fastest")
    with pytest.raises(ValueError, match="fastest"):
        numerics.profile()
    with pytest.raises(ValueError, match="unknown numerics profile"):
        numerics.pin("fastest")


def test_pinned_environment_restores_the_callers(monkeypatch):
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE,STRICT")
    monkeypatch.setenv(numerics.ENV, "portable")
    with numerics.pinned_environment("native"):
        assert "MKL_CBWR" not in os.environ
        assert os.environ[numerics.ENV] == "native"
    assert os.environ["MKL_CBWR"] == "COMPATIBLE,STRICT"
    assert os.environ[numerics.ENV] == "portable"


def test_restored_environment_undoes_sets_and_removals_even_on_error(monkeypatch):
    monkeypatch.setenv("QNN_TEST_KEPT", "before")
    monkeypatch.delenv("QNN_TEST_ABSENT", raising=False)
    with pytest.raises(RuntimeError):
        with numerics.restored_environment(["QNN_TEST_KEPT", "QNN_TEST_ABSENT"]):
            del os.environ["QNN_TEST_KEPT"]
            os.environ["QNN_TEST_ABSENT"] = "set inside"
            raise RuntimeError("the block fails")
    assert os.environ["QNN_TEST_KEPT"] == "before"
    assert "QNN_TEST_ABSENT" not in os.environ


def test_provenance_records_the_numerics():
    record = provenance()["numerics"]
    assert record["profile"] == os.environ.get(numerics.ENV, "native")
    assert record["MKL_CBWR"] == os.environ.get("MKL_CBWR")
    assert set(record) >= {"mkl_branch", "aten_capability", "ATEN_CPU_CAPABILITY"}


def test_mkl_honours_only_compatible_on_a_non_intel_cpu():
    """Why the portable profile asks MKL for COMPATIBLE: on a non-Intel CPU an AVX2
    request reads back as MKL's AUTO branch (its own per-CPU choice), not AVX2."""
    if not HAS_MKL or "GenuineIntel" in open("/proc/cpuinfo").read():
        pytest.skip("shows MKL's behaviour on a non-Intel CPU with MKL")
    run = fresh_python("import torch; torch.ones(8, 8) @ torch.ones(8, 8)\n"
                       "from qnnlib import numerics; print(numerics.mkl_branch())",
                       MKL_CBWR="AVX2,STRICT")
    assert run.stdout.split()[-1] == "AUTO,STRICT"
