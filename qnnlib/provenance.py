"""What produced a number: code version, packages, hardware, numerics, threads and wall time.

Every metrics file and benchmark report of the replication carries one `provenance()`
dict, so a number can be traced to the commit, machine and settings behind it.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

from . import numerics

PACKAGES = ("torch", "numpy", "numba", "llvmlite", "pandas", "cupy-cuda13x", "cupy-cuda12x")


def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo where available; platform.processor() is
    often empty on Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def gpu_description() -> dict | None:
    """Name, driver and CUDA versions of the first CUDA device torch sees, else None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    info = {"gpu": torch.cuda.get_device_name(0), "cuda_torch": torch.version.cuda,
            "capability": ".".join(map(str, torch.cuda.get_device_capability(0)))}
    try:
        import cupy
        info["driver"] = cupy.cuda.runtime.driverGetVersion()
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
    except Exception:  # CuPy is optional; its absence must not hide the rest
        pass
    return info


def package_versions() -> dict:
    """Installed versions of the numerical stack (absent packages are left out)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


# What a pipeline run itself writes: a later stage must not call its own code "dirty"
# because an earlier stage has already rewritten its outputs.
OUTPUTS = ("results", "dvc.lock")


def git_state(folder: Path | None = None) -> dict:
    """{"commit", "dirty"} of the checkout holding `folder` (default: the working
    directory); both None outside a git checkout or without git. "dirty" means a tracked
    file other than the pipeline's own outputs (`OUTPUTS`) differs from the commit: the
    code and parameters that produced a number are not exactly the commit's."""
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        excluded = [f":(top,exclude){name}" for name in OUTPUTS]
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", *excluded)
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(changed)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def provenance(threads: int | None = None, wall_seconds: float | None = None,
               numeric_settings: dict | None = None) -> dict:
    """Commit, packages, CPU, GPU, numeric settings (default: this process's
    `numerics.settings()`), threads and wall time, as one JSON-ready dict."""
    if threads is None and "torch" in sys.modules:
        threads = sys.modules["torch"].get_num_threads()
    return {**git_state(), "packages": package_versions(), "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "gpu": gpu_description(), "numerics": numeric_settings or numerics.settings(), "threads": threads,
            "wall_seconds": None if wall_seconds is None else round(wall_seconds, 1)}
