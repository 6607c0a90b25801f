"""Pinned CPU numerics: the same float32 bits on every x86-64 CPU with AVX2.

A float32 sum depends on the order of its terms, and the CPU libraries inside torch pick
their code by the CPU they find:

- MKL (every float32 matrix product) chooses its sgemm kernel per CPU. Its "conditional
  numerical reproducibility" branches pin that choice, but on a non-Intel CPU MKL honours
  only COMPATIBLE (SSE2 without the approximate rcpps/rsqrtps): asked for AVX2, it runs
  its AUTO branch instead. `mkl_branch()` shows it (on an AMD EPYC, MKL_CBWR=AVX2,STRICT
  reads back as AUTO), so COMPATIBLE is the one branch that computes the same bits on
  Intel and AMD.
- ATen compiles each vectorised kernel (batch norm, reductions, Adam, ...) once per
  instruction set and dispatches on the CPU; ATEN_CPU_CAPABILITY=avx2 makes every AVX2
  CPU run the same code. oneDNN likewise, capped by ONEDNN_MAX_CPU_ISA.

Each library reads its variable once, when it first computes, so `pin()` must run before
torch does anything: the pipeline calls it when `qnnpipeline` is imported, before it
imports torch, and child processes inherit the environment. `QNN_NUMERICS=native` turns
it off: each library picks its fastest code again (the speed measurements run native,
and say so). `settings()` is what every result's
provenance records: the profile asked for and what the libraries actually use.

This module imports nothing heavy: it must be importable before torch.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import warnings

__all__ = ["PROFILES", "ENV", "pin", "pinned_environment", "restored_environment", "profile",
           "settings", "mkl_branch", "check"]

ENV = "QNN_NUMERICS"
PROFILES = {
    "portable": {"MKL_CBWR": "COMPATIBLE,STRICT", "ATEN_CPU_CAPABILITY": "avx2",
                 "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "native": {},
}
# What the libraries report when a profile is in force (None: no requirement).
EXPECTED = {"portable": {"mkl_branch": "COMPATIBLE,STRICT", "aten_capability": "AVX2"},
            "native": {}}

# oneMKL's service API (exported by torch's CPU library): branch codes of mkl_cbwr_get.
_MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1",
                 8: "SSE4_2", 9: "AVX", 10: "AVX2", 12: "AVX512", 14: "AVX512_E1",
                 15: "AVX512_E2", 16: "AVX512_E3", 17: "AVX512_E4", 18: "AVX2_E1",
                 19: "AVX512_E5"}
_MKL_CBWR_ALL, _MKL_CBWR_STRICT = -1, 0x10000


def profile() -> str:
    """The profile in force: `QNN_NUMERICS` (default "portable")."""
    name = os.environ.get(ENV, "portable")
    if name not in PROFILES:
        raise ValueError(f"{ENV}={name!r}: expected one of {sorted(PROFILES)}")
    return name


def pin(name: str | None = None) -> str:
    """Put profile `name` (default: `profile()`) into this process's environment, for
    torch and for every child process; warn if torch already computed with other
    settings. Returns the profile's name."""
    name = name or profile()
    if name not in PROFILES:
        raise ValueError(f"unknown numerics profile {name!r}; expected one of {sorted(PROFILES)}")
    os.environ[ENV] = name
    for key in PROFILES["portable"]:  # native: each library's own default
        os.environ.pop(key, None)
    os.environ.update(PROFILES[name])
    if "torch" in sys.modules:
        check(name)
    return name


@contextlib.contextmanager
def restored_environment(keys):
    """The block may set or remove the variables `keys`; they are as before once it ends."""
    saved = {key: os.environ.get(key) for key in keys}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def pinned_environment(name: str):
    """Profile `name` in the environment for the child processes started inside the
    block (a notebook kernel, say); this process's environment comes back afterwards."""
    with restored_environment((ENV, *PROFILES["portable"])):
        pin(name)
        yield


def _torch_cpu_library():
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        library = ctypes.CDLL(path)
        library.mkl_serv_cbwr_get  # noqa: B018 (raises AttributeError without MKL)
        return library
    except (OSError, AttributeError):
        return None


def mkl_branch() -> str | None:
    """The MKL code branch in force in this process, e.g. "COMPATIBLE,STRICT" or "AUTO"
    (None without torch or MKL). MKL fixes it at its first call; asking fixes it too."""
    library = _torch_cpu_library()
    if library is None:
        return None
    code = library.mkl_serv_cbwr_get(ctypes.c_int(_MKL_CBWR_ALL))
    if code <= 0:
        return None
    branch = _MKL_BRANCHES.get(code & 0xFFFF, str(code & 0xFFFF))
    return branch + (",STRICT" if code & _MKL_CBWR_STRICT else "")


def _effective() -> dict:
    torch = sys.modules.get("torch")
    if torch is None:
        return {"mkl_branch": None, "aten_capability": None}
    return {"mkl_branch": mkl_branch(), "aten_capability": torch.backends.cpu.get_cpu_capability()}


def check(name: str | None = None) -> list[str]:
    """Compare what MKL and ATen use with profile `name`; warn (RuntimeWarning) and
    return the differences, [] when all is as asked."""
    name = name or profile()
    effective = _effective()
    wrong = [f"{key} is {effective[key]}, not {want}"
             for key, want in EXPECTED[name].items()
             if effective[key] is not None and effective[key] != want]
    if wrong:
        exports = " ".join(f"{key}={value}" for key, value in PROFILES[name].items())
        warnings.warn(
            f"torch started computing before the {name!r} numerics were set ({'; '.join(wrong)}), "
            "so results here may differ in the last bits from the committed ones. Fix: import "
            "qnnpipeline before torch (first line of the notebook or script), or start the "
            f"process with `{ENV}={name} {exports}` in its environment.",
            RuntimeWarning, stacklevel=3)
    return wrong


def settings(effective: bool = True) -> dict:
    """The numerics behind a result: the profile, the variables that pin it and, with
    `effective`, what MKL and ATen in this process actually use (None before torch is
    imported). A process that starts others records them with `effective=False`."""
    record = {"profile": os.environ.get(ENV, "native"),
              **{key: os.environ.get(key) for key in PROFILES["portable"]}}
    return {**record, **_effective()} if effective else record
