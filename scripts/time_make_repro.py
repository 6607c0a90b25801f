"""`make repro` timed from a clean clone, every stage recomputed, and its outputs compared
with the committed ones.

    python scripts/time_make_repro.py [--clone DIR] [--out results/reproducibility/make_repro.json]

Clones this checkout's HEAD into DIR (default: a new temporary folder) and runs there the two
halves of `make repro`: `make venv` (the environment of requirements.lock) and
`make repro REPRO_FLAGS=-f`, which forces every stage to recompute (in a clean clone the
committed outputs match dvc.lock, so a plain `dvc repro` finds nothing to do). Each stage is
timed from DVC's "Running stage" lines. Then every file the run rewrote is compared with the
commit: the same bytes, the same once what describes the run rather than its result is left
out (JSON `provenance` and `seconds`, the `seconds` column of histories, a notebook's
metadata, execution counts, durations and how its streams were split), or different. Writes a JSON record with this machine's provenance.
Run it with nothing else on the machine, and with `QNN_DATA_MIRROR` set where there is no
network.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import qnnpipeline  # noqa: E402,F401 (the pinned numerics the stages run with, recorded below)
from qnnlib.provenance import git_state, provenance  # noqa: E402
from qnnpipeline.runs import write_json  # noqa: E402

STAGE_LINE = re.compile(r"Running stage '([^']+)'")
DURATION = re.compile(r"\d+(\.\d+)?\s?(ms|µs|us|ns|s|sec|seconds|min|minutes)\b")


def timed(command: list[str], cwd: Path, log) -> tuple[float, dict[str, float]]:
    """Wall seconds of `command`, and of each DVC stage it ran (from one "Running stage"
    line to the next, or to the end)."""
    start = time.perf_counter()
    starts: list[tuple[str, float]] = []
    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as process:
        for line in process.stdout:
            log.write(line)
            if match := STAGE_LINE.search(line):
                starts.append((match.group(1), time.perf_counter()))
    end = time.perf_counter()
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed (exit {process.returncode}); its log: {log.name}")
    ends = [moment for _, moment in starts[1:]] + [end]
    return end - start, {name: round(stop - begun, 1) for (name, begun), stop in zip(starts, ends)}


RUN_DESCRIPTION = ("provenance", "seconds")  # JSON keys that describe the run, not its result


def without_provenance(value):
    if isinstance(value, dict):
        return {key: without_provenance(item) for key, item in value.items() if key not in RUN_DESCRIPTION}
    if isinstance(value, list):
        return [without_provenance(item) for item in value]
    return value


def csv_without_seconds(text: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    keep = [i for i, name in enumerate(rows[0] if rows else []) if name != "seconds"]
    return [[row[i] for i in keep if i < len(row)] for row in rows]


def notebook_results(text: str) -> list:
    """Each cell's source and outputs: what the notebook computed, not when or where (a
    stream's text may arrive in one output or in several)."""
    def outputs(items):
        kept = []
        for item in items:
            item = {key: value for key, value in item.items() if key not in ("execution_count", "metadata")}
            if item.get("output_type") == "stream":
                item["text"] = "".join(item["text"])
                if kept and kept[-1].get("output_type") == "stream" and kept[-1]["name"] == item["name"]:
                    kept[-1]["text"] += item["text"]
                    continue
            kept.append(item)
        return json.loads(DURATION.sub("DURATION", json.dumps(kept, sort_keys=True)))
    return [(cell["source"], outputs(cell.get("outputs", []))) for cell in json.loads(text)["cells"]]


REDUCE = {".json": lambda text: without_provenance(json.loads(text)), ".csv": csv_without_seconds,
          ".ipynb": notebook_results}


def compare(path: Path, committed: bytes | None) -> str:
    """'identical', 'result identical' (only the run's description differs), 'new' or 'differs'."""
    made = path.read_bytes()
    if committed is None:
        return "new"
    if made == committed:
        return "identical"
    reduce = REDUCE.get(path.suffix)
    try:
        if reduce and reduce(made.decode()) == reduce(committed.decode()):
            return "result identical"
    except (ValueError, UnicodeDecodeError, KeyError):
        pass
    return "differs"


def rewritten(clone: Path) -> dict[str, str]:
    """Every file the run changed or added, against HEAD (ignored files aside)."""
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    verdicts = {}
    for line in status:
        name = line[3:]
        shown = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=clone, capture_output=True)
        verdicts[name] = compare(clone / name, shown.stdout if shown.returncode == 0 else None)
    return verdicts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clone", type=Path, help="an empty or absent folder (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=Path("results/reproducibility/make_repro.json"))
    args = parser.parse_args(argv)
    source = Path(__file__).resolve().parents[1]
    clone = args.clone or Path(tempfile.mkdtemp(prefix="make-repro-"))
    subprocess.run(["git", "clone", "--quiet", str(source), str(clone)], check=True)
    checkout = git_state(clone)  # before the run rewrites README.md's claims
    with (clone.parent / f"{clone.name}.log").open("w") as log:
        setup_s, _ = timed(["make", "venv"], clone, log)
        repro_s, stages = timed(["make", "repro", "REPRO_FLAGS=-f"], clone, log)
    files = rewritten(clone)
    record = {"setup_seconds": round(setup_s, 1), "repro_seconds": round(repro_s, 1),
              "total_seconds": round(setup_s + repro_s, 1), "stages": stages, "files": files,
              "provenance": {**provenance(wall_seconds=round(setup_s + repro_s, 1)), **checkout,
                             "threads": "each stage's own (params.yaml)"}}
    write_json(args.out, record)
    counts = {verdict: list(files.values()).count(verdict) for verdict in sorted(set(files.values()))}
    print(f"make repro: {record['total_seconds'] / 60:.1f} min (set-up {setup_s / 60:.1f}); files {counts}; "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
