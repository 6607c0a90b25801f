"""CUDA sources and launch geometry, checked without a GPU.

Every .cu file compiles for Ampere and Hopper; the launch grids respect CUDA's limits
(no zero dimension, gridDim.y <= 65535); the shared-memory staging stores of both tiled
kernels are free of bank conflicts, by simulating the 32 banks on the index
arithmetic of the source with its own constants.
"""
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

import qnnlib.kernels
from qnnlib.kernels import cuda

KERNEL_DIR = Path(qnnlib.kernels.__file__).parent
SOURCES = sorted(KERNEL_DIR.glob("*.cu"))
BANKS, BANK_BYTES = 32, 4


def test_sources_are_found():
    assert cuda.SOURCE in SOURCES and cuda.NAIVE_SOURCE in SOURCES


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.name)
def test_compiles_with_nvcc(source, arch, tmp_path):
    result = subprocess.run(
        ["nvcc", f"-arch={arch}", "-cubin", "-std=c++17", "-Werror", "all-warnings",
         "-o", str(tmp_path / "kernel.cubin"), str(source)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kernel.cubin").stat().st_size > 0


def test_kernels_named_in_python_exist_in_the_source():
    text = "".join(source.read_text() for source in SOURCES)
    python = Path(cuda.__file__).read_text()
    for name in re.findall(r'get_function\("(\w+)"\)', python):
        assert re.search(rf"__global__ void(?: __launch_bounds__\(\d+\))?\s+{name}\(", text), name


def test_variant_choice():
    assert cuda.choose_variant("auto", 90) == "tensor_core"
    assert cuda.choose_variant("auto", 75) == "cuda_core"
    assert cuda.choose_variant("cuda_core", 90) == "cuda_core"
    with pytest.raises(ValueError, match="compute capability >= 8.0"):
        cuda.choose_variant("tensor_core", 75)


@pytest.mark.parametrize("m, n", [(0, 5), (5, 0), (0, 0)])
def test_empty_outputs_launch_nothing(m, n):
    assert cuda.tile_grid(m, n) is None
    assert cuda.flat_grid(m * n) is None


@pytest.mark.parametrize("m, n, expected", [
    (1, 1, (1, 1)), (64, 64, (1, 1)), (65, 128, (2, 2)), (10000, 4096, (157, 64)),
    # 5,000,000 rows: 78,125 row tiles, beyond gridDim.y but fine on grid x
    (5_000_000, 10, (78125, 1)), (5_000_001, 4_194_240, (78126, 65535)),
])
def test_tile_grid_puts_rows_on_x(m, n, expected):
    assert cuda.tile_grid(m, n) == expected


def test_tile_grid_refuses_what_no_launch_can_cover():
    with pytest.raises(ValueError, match="more than gridDim.y allows"):
        cuda.tile_grid(10, 4_194_241)
    with pytest.raises(ValueError, match="must fit in int32"):
        cuda.tile_grid(2**31, 1)
    with pytest.raises(ValueError, match="sizes must be >= 0"):
        cuda.tile_grid(-1, 3)


def test_bitplane_limits_are_what_the_int32_dots_hold():
    """M up to the int parameter's limit (the planes are indexed in 64 bits: 2^28 rows,
    16 GiB of planes, is fine); K up to 8,421,504, where 255 K still fits int32."""
    assert 255 * cuda.MAX_PIXEL_K <= 2**31 - 1 < 255 * (cuda.MAX_PIXEL_K + 1)
    cuda.check_bitplane_sizes(2**28, 784)
    cuda.check_bitplane_sizes(2**31 - 1, cuda.MAX_PIXEL_K)
    with pytest.raises(ValueError, match="take M as int32"):
        cuda.check_bitplane_sizes(2**31, 784)
    with pytest.raises(ValueError, match="k=8421505 pixels per row: .* at most 8421504"):
        cuda.check_bitplane_sizes(10, cuda.MAX_PIXEL_K + 1)


def test_flat_grid_covers_every_item():
    for count in (1, 255, 256, 257, 10000 * 4096):
        (blocks,) = cuda.flat_grid(count)
        assert (blocks - 1) * 256 < count <= blocks * 256


def _arithmetic_cases() -> list:
    """(helper, arguments, exact value) at the limits the host checks allow."""
    k, big_k = cuda.MAX_PIXEL_K, 2**30 - 1  # checks.MAX_K
    return [
        ("plane_row<8>", (2**28, 7), 2**31 + 7),  # M = 2^28: 16 GiB of planes
        ("plane_row<8>", (2**31 - 1, 7), (2**31 - 1) * 8 + 7),
        ("bitplane_dot", (255 * k, 255 * k), 255 * k),  # all pixels 255, all weights +1
        ("bitplane_dot", (0, 255 * k), -255 * k),  # all pixels 255, all weights -1
        ("and_popc_dot", (big_k, big_k, big_k, big_k), big_k),  # a = b = all +1
        ("and_popc_dot", (0, big_k, 0, big_k), -big_k),  # a = +1, b = -1
        ("and_popc_dot", (0, 0, 0, big_k), big_k),  # a = b = all -1
    ]


def _harness(cases) -> str:
    """A host program printing each helper's value; volatile inputs, so that it is computed
    at run time, where UBSan checks it."""
    lines = [f'#include "{cuda.SOURCE.name}"', "#include <cstdio>", "int main() {"]
    for helper, args, _ in cases:
        values = ", ".join(str(arg) for arg in args)
        call = f"{helper}({', '.join(f'v[{i}]' for i in range(len(args)))})"
        lines.append(f'    {{ volatile long long v[] = {{{values}}}; printf("%lld\\n", (long long){call}); }}')
    return "\n".join(lines + ["    return 0;", "}", ""])


@pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("g++") is None,
                    reason="nvcc (with g++ as host compiler) not on PATH")
def test_index_and_dot_arithmetic_is_exact_at_the_limits(tmp_path):
    """The kernels' helpers where index or dot arithmetic leaves int, compiled by nvcc for
    the host with UBSan (a signed overflow halts the program) and run at the largest sizes
    the host checks allow: M = 2^31 - 1 bit-plane rows, K = MAX_PIXEL_K pixels, K = MAX_K."""
    cases = _arithmetic_cases()
    harness, program = tmp_path / "harness.cu", tmp_path / "harness"
    harness.write_text(_harness(cases))
    build = subprocess.run(["nvcc", "-std=c++17", "-arch=sm_90", "-I", str(KERNEL_DIR),
                            "-Xcompiler", "-fsanitize=undefined", "-lubsan", "-o", str(program),
                            str(harness)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(program)], capture_output=True, text=True,
                         env={**os.environ, "UBSAN_OPTIONS": "halt_on_error=1"})
    assert run.returncode == 0 and "runtime error" not in run.stderr, run.stderr
    assert [int(line) for line in run.stdout.split()] == [value for _, _, value in cases]


def test_gpu_benchmark_names_its_timing():
    """gpu_kernels.json says how its times were taken: by qnnlib.timing.race."""
    import importlib.util
    import inspect

    from qnnlib.gpu import bench

    script = KERNEL_DIR.parents[1] / "benchmarks" / "gpu.py"
    spec = importlib.util.spec_from_file_location("gpu_benchmark", script)
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    assert "race(" in inspect.getsource(bench.median_ms)
    assert "qnnlib.timing.race" in gpu.TIMING and "torch.utils.benchmark" not in gpu.TIMING


def _define(name: str) -> int:
    """The value of `#define NAME <expr>` in the source, expanding earlier defines."""
    text = cuda.SOURCE.read_text()
    expr = re.search(rf"^#define {name} (.+?)(?:\s*//.*)?$", text, re.M).group(1)
    for other in re.findall(r"[A-Z_]{2,}", expr):
        expr = expr.replace(other, str(_define(other)))
    return int(eval(expr, {"__builtins__": {}}))  # noqa: S307 (our own arithmetic)


def _worst_conflict(byte_addresses, word_bytes: int) -> int:
    """Most distinct addresses one bank serves in one shared-memory phase: a warp's
    4-byte accesses form one phase, 8-byte accesses two half-warp phases."""
    per_phase = 32 * BANK_BYTES // word_bytes
    worst = 1
    for start in range(0, len(byte_addresses), per_phase):
        phase = set(byte_addresses[start:start + per_phase])
        banks = Counter((address // BANK_BYTES) % BANKS for address in phase)
        worst = max(worst, max(banks.values()))
    return worst


def test_cuda_core_staging_store_is_conflict_free():
    kw, tile, row = _define("KW"), _define("TILE"), _define("STAGE_ROW")
    for warp in range(kw * tile // 32):
        # the store loop: i = thread, r = i / KW, w = i % KW, element w * STAGE_ROW + r
        addresses = [8 * ((i % kw) * row + i // kw) for i in range(32 * warp, 32 * warp + 32)]
        assert _worst_conflict(addresses, 8) == 1
    # the old layout (no padding) had an 8-way conflict: the simulator sees it
    unpadded = [8 * ((i % kw) * tile + i // kw) for i in range(32)]
    assert _worst_conflict(unpadded, 8) == 8


def test_tensor_core_staging_and_fragment_loads_are_conflict_free():
    ks, stride = _define("KS"), _define("STAGE_U32")
    assert stride % 2 == 0  # 64-bit stores need 8-byte aligned rows
    stores = [4 * ((i // ks) * stride + 2 * (i % ks)) for i in range(32)]
    assert _worst_conflict(stores, 8) == 1
    # fragment loads: lane -> row group = lane / 4, u32 column kbase = in_group (+ 8 step)
    for step in range(ks // 4):
        loads = [4 * ((lane // 4) * stride + step * 8 + lane % 4) for lane in range(32)]
        assert _worst_conflict(loads, 4) == 1
    # two u32 stores per word (the old code) were 2-way conflicted
    halves = [4 * ((i // ks) * stride + 2 * (i % ks)) for i in range(32)]
    assert _worst_conflict(halves, 4) == 2


# --- launches, checked against the kernels' signatures with a stand-in for CuPy --------

POINTEE_DTYPES = {"u64": {"uint64"}, "int": {"int32"}, "float": {"float32"}, "u8": {"bool", "uint8"}}


def _signatures() -> dict:
    """kernel name -> [(type, is_pointer)] from the extern "C" __global__ declarations."""
    text = "".join(source.read_text() for source in SOURCES)
    found = {}
    pattern = r'extern "C" __global__ void(?: __launch_bounds__\(\d+\))?\s+(\w+)\(([^)]*)\)'
    for name, params in re.findall(pattern, text):
        found[name] = [(re.sub(r"\b(const|__restrict__)\b|\*|\w+$", "", p).strip(), "*" in p)
                       for p in (p.strip() for p in params.split(","))]
    return found


class _FakeKernel:
    def __init__(self, name, signature, launches):
        self.name, self.signature, self.launches = name, signature, launches

    def __call__(self, grid, block, args):
        import numpy as np

        assert len(args) == len(self.signature), (self.name, len(args))
        assert all(isinstance(g, int) and 0 < g <= cuda.MAX_GRID_X for g in grid), grid
        assert len(block) == 1 and 0 < block[0] <= 1024
        for (ctype, pointer), arg in zip(self.signature, args):
            if not pointer:
                assert isinstance(arg, np.int32), (self.name, ctype, arg)
            elif isinstance(arg, np.ndarray):
                assert arg.dtype.name in POINTEE_DTYPES[ctype] and arg.flags.c_contiguous, \
                    (self.name, ctype, arg.dtype)
            else:
                assert arg is cuda.NULL, (self.name, ctype, arg)
        self.launches.append((self.name, grid, block))


@pytest.fixture
def fake_cupy(monkeypatch):
    """NumPy standing in for CuPy, and kernels that check their arguments (sm_90)."""
    import sys
    import types

    import numpy as np

    fake = types.ModuleType("cupy")
    fake.__dict__.update({name: getattr(np, name) for name in
                          ("zeros", "empty", "int32", "uint64", "float32", "ascontiguousarray")})
    fake.cuda = types.SimpleNamespace(Device=lambda: types.SimpleNamespace(compute_capability="90"))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    launches, signatures = [], _signatures()
    module = types.SimpleNamespace(
        get_function=lambda name: _FakeKernel(name, signatures[name], launches))
    monkeypatch.setattr(cuda, "_module", lambda: module)
    monkeypatch.setattr(cuda, "_naive_module", lambda: module)
    return fake, launches


def test_every_launch_matches_its_kernel_signature(fake_cupy):
    import numpy as np

    _, launches = fake_cupy
    a, b = np.zeros((70, 2), np.uint64), np.zeros((130, 2), np.uint64)
    for variant in ("cuda_core", "tensor_core"):
        cuda.xnor_gemm(a, b, 100, None, np.empty((70, 130), np.int32), variant)
        epilogue = (np.zeros(130, np.int32), np.zeros(130, bool))
        cuda.xnor_gemm(a, b, 100, epilogue, np.empty((70, 3), np.uint64), variant)
    planes = cuda.pack_bitplanes(np.zeros((70, 784), np.uint8))
    assert planes.shape == (70, 8, 13)
    cuda.bitplane_gemm(planes, np.zeros((130, 13), np.uint64), 784, np.zeros(70, np.int32),
                       None, np.empty((70, 130), np.int32))
    cuda.naive_sgemm(np.zeros((3, 5), np.float32), np.zeros((5, 7), np.float32))
    cuda.naive_xnor_gemm(a, np.zeros((2, 7), np.uint64), 100)
    names = [name for name, _, _ in launches]
    assert names.count("xnor_gemm_tensor_core") == 2 and names.count("row_popcount") == 4
    assert {"xnor_gemm_cuda_core", "pack_bitplanes", "bitplane_gemm", "naive_sgemm",
            "naive_xnor_gemm"} <= set(names)
    tiled = [grid for name, grid, _ in launches if name in ("xnor_gemm_cuda_core", "bitplane_gemm")]
    assert set(tiled) == {(2, 3)}  # 70 rows -> 2 row tiles on x, 130 columns -> 3 on y


def test_bitplane_launches_refuse_what_the_kernels_cannot_compute(fake_cupy):
    """Checked from the shapes alone, before anything is allocated or launched (the
    stand-ins have nothing but a shape)."""
    import types

    _, launches = fake_cupy
    n_words = -(-(cuda.MAX_PIXEL_K + 1) // 64)
    planes = types.SimpleNamespace(shape=(10, 8, n_words))
    masks = types.SimpleNamespace(shape=(3, n_words))
    with pytest.raises(ValueError, match="pixels per row"):
        cuda.bitplane_gemm(planes, masks, cuda.MAX_PIXEL_K + 1, None, None, None)
    with pytest.raises(ValueError, match="pixel rows"):
        cuda.pack_bitplanes(types.SimpleNamespace(shape=(2**31, 784)))
    assert launches == []


def test_cuda_ops_and_engine_launch_nothing_wrong(fake_cupy):
    """CudaOps (what `make gpu` runs) through the stand-in: every call reaches a kernel
    with the right arguments."""
    import numpy as np

    from qnnlib.gpu.ops import CudaOps

    _, launches = fake_cupy
    ops = CudaOps()
    a, b = np.zeros((4, 2), np.uint64), np.zeros((9, 2), np.uint64)
    assert ops.xnor(a, b, 100).shape == (4, 9)
    assert ops.xnor(a, b, 100, "cuda_core", np.zeros(9, np.int32), np.zeros(9, bool)).shape == (4, 1)
    assert ops.naive_xnor(a, np.zeros((2, 9), np.uint64), 100).shape == (4, 9)
    planes = ops.pack_bitplanes(np.zeros((4, 784), np.uint8))
    assert ops.bitplane(planes, np.zeros((9, 13), np.uint64), 784, np.zeros(4, np.int64)).shape == (4, 9)
    assert ops.variants() == ("cuda_core", "tensor_core")
    assert len(launches) >= 6


def _nvrtc():
    """NVRTC (what CuPy's RawModule compiles with) from the `nvidia` wheels torch ships
    with, or None."""
    import ctypes
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    folders = [Path(p) / sub / "lib" for p in (spec.submodule_search_locations if spec else [])
               for sub in ("cu13", "cuda_nvrtc", "cu12")]
    for folder in folders:
        builtins, library = sorted(folder.glob("libnvrtc-builtins.so*")), sorted(folder.glob("libnvrtc.so*"))
        if builtins and library:
            ctypes.CDLL(str(builtins[0]), mode=ctypes.RTLD_GLOBAL)  # nvrtc opens it by name
            return ctypes.CDLL(str(library[0]))
    return None


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.name)
def test_compiles_with_nvrtc_as_cupy_does(source, arch):
    import ctypes

    nvrtc = _nvrtc()
    if nvrtc is None:
        pytest.skip("no NVRTC library in the nvidia wheels")
    program = ctypes.c_void_p()
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(program), source.read_bytes(),
                                    source.name.encode(), 0, None, None) == 0
    options = [b"--std=c++17", f"-arch={arch}".encode()]
    status = nvrtc.nvrtcCompileProgram(program, len(options), (ctypes.c_char_p * 2)(*options))
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(program, log)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    assert status == 0, log.value.decode()
