"""Every CUDA source in the package compiles for Ampere and Hopper (no GPU needed)."""
import shutil
import subprocess
from pathlib import Path

import pytest

import qnnlib.kernels
from qnnlib.kernels import cuda

KERNEL_DIR = Path(qnnlib.kernels.__file__).parent
SOURCES = sorted(KERNEL_DIR.glob("*.cu"))


def test_sources_are_found():
    assert cuda.SOURCE in SOURCES


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.name)
def test_compiles_with_nvcc(source, arch, tmp_path):
    result = subprocess.run(
        ["nvcc", f"-arch={arch}", "-cubin", "-Werror", "all-warnings",
         "-o", str(tmp_path / "kernel.cubin"), str(source)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kernel.cubin").stat().st_size > 0


def test_variant_choice():
    assert cuda.choose_variant("auto", 90) == "tensor_core"
    assert cuda.choose_variant("auto", 75) == "cuda_core"
    assert cuda.choose_variant("cuda_core", 90) == "cuda_core"
    with pytest.raises(ValueError, match="compute capability >= 8.0"):
        cuda.choose_variant("tensor_core", 75)


def test_grid_covers_every_output():
    assert cuda.grid_for(1, 1) == (1, 1)
    assert cuda.grid_for(65, 128) == (2, 2)
