"""The conda environment, the pip project and its lock file must install the same packages."""
import re
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from qnnpipeline.paths import root

ROOT = root()


def _pyproject_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return set(project["dependencies"]) | set(extras["pipeline"]) | set(extras["test"]) | set(extras["book"])


def _conda_pip_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    return {req for section in pip_sections for req in section if not req.startswith("-e")}


def test_environment_yml_matches_pyproject():
    assert _conda_pip_requirements() == _pyproject_requirements()


def test_environment_yml_pins_python_311():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]


def test_dvc_never_phones_home():
    config = (ROOT / ".dvc" / "config").read_text()
    assert "analytics = false" in config
    assert "check_update = false" in config


# --- requirements.lock (pip-compile --generate-hashes; `make` installs from it) ---------------
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s\\;]+)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\b")


def _lock_entries(text):
    """{PEP 503 name: (version or None, number of sha256 hashes, first line)} of a lock's text.

    An entry is a line that starts in column 0 (neither a comment nor an option) with its
    backslash continuations; a line that is not `name==version` keeps version None."""
    entries, current = {}, None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace() and current is not None:
            version, hashes, first = entries[current]
            entries[current] = (version, hashes + len(HASH.findall(line)), first)
            continue
        pin = PIN.match(line)
        current = canonicalize_name(pin["name"]) if pin else stripped
        entries[current] = (pin["version"] if pin else None, len(HASH.findall(line)), stripped)
    return entries


def _lock():
    return _lock_entries((ROOT / "requirements.lock").read_text())


def _unsatisfied(requirements, entries):
    """The requirements that the lock lacks or pins outside their specifier."""
    bad = []
    for text in sorted(requirements):
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(
                {"python_version": "3.11", "sys_platform": "linux", "platform_machine": "x86_64"}):
            continue
        version = entries.get(canonicalize_name(req.name), (None,))[0]
        if version is None or not req.specifier.contains(version, prereleases=True):
            bad.append(f"{text} (lock: {version})")
    return bad


def _unpinned(entries):
    return [first for version, hashes, first in entries.values() if version is None or hashes == 0]


def test_lock_satisfies_every_pyproject_requirement():
    entries = _lock()
    assert len(entries) > 100  # the whole transitive closure, not just the direct requirements
    assert _unsatisfied(_pyproject_requirements(), entries) == []


def test_lock_pins_every_entry_with_hashes():
    entries = _lock()
    assert _unpinned(entries) == []
    assert "qnnlib" not in entries  # the project goes on top with `pip install --no-deps -e .`


def test_lock_pins_torch_2_14_1():
    entries = _lock()
    assert entries["torch"][0] == "2.14.1"
    assert entries["torchvision"][0] == "0.29.1"


def test_lock_checks_can_fail():
    """The checks above on a doctored lock: wrong torch, a missing hash, a missing package."""
    text = (ROOT / "requirements.lock").read_text()
    old_torch = _lock_entries(text.replace("\ntorch==2.14.1 ", "\ntorch==2.13.0 "))
    assert old_torch["torch"][0] == "2.13.0"
    assert _unsatisfied({"torch==2.14.1"}, old_torch) == ["torch==2.14.1 (lock: 2.13.0)"]
    no_hash = _lock_entries("numpy==2.4.6\n    # via pandas\ntqdm>=4.66 \\\n    --hash=sha256:" + "0" * 64)
    assert _unpinned(no_hash) == ["numpy==2.4.6", "tqdm>=4.66 \\"]
    assert _unsatisfied({"pandas>=2.1", "numpy>=3"}, no_hash) == [
        "numpy>=3 (lock: 2.4.6)", "pandas>=2.1 (lock: None)"]
