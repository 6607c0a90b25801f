"""The budget trainings rerun on another machine, kept to check the committed results' bits.

    dvc repro -f mnist_budget                         # on another CPU: rewrites the outputs
    python scripts/cross_machine_rerun.py             # keeps what the rerun made
    git checkout HEAD -- results/metrics results/tables dvc.lock   # the committed outputs again
    python -m pytest tests/test_cross_machine_rerun.py

It writes `results/reproducibility/mnist_budget_rerun.json`: for each budget run, its
history without the seconds column, its best epoch and errors, the MD5 of its checkpoint
file (what `dvc.lock` records for it) and its wall time, with the rerun's provenance
(commit, CPU, numeric settings). The test compares that record with the committed
outputs, which another machine made: same bits, or it fails and names what differs.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

RUNS = ("mnist_cpu", "mnist_fp")  # the two trainings of the `mnist_budget` stage
SUMMARY = ("best_epoch", "best_val_error", "test_error", "epochs")
RECORD = Path("results/reproducibility/mnist_budget_rerun.json")


def history_without_seconds(path: Path) -> list[str]:
    """The history CSV's rows, as text, without the one column that depends on the machine."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    keep = [i for i, name in enumerate(rows[0]) if name != "seconds"]
    return [",".join(row[i] for i in keep) for row in rows]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def run_record(run: str, root: Path) -> dict:
    metrics = json.loads((root / "results" / "metrics" / f"{run}.json").read_text())
    return {"history": history_without_seconds(root / "results" / "tables" / f"{run}_history.csv"),
            **{key: metrics[key] for key in SUMMARY},
            "checkpoint_md5": md5(root / "checkpoints" / f"{run}.pt"),
            "wall_seconds": metrics["provenance"]["wall_seconds"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=".", help="the checkout the rerun wrote to")
    args = parser.parse_args(argv)
    root = Path(args.root)
    metrics = json.loads((root / "results" / "metrics" / f"{RUNS[0]}.json").read_text())
    record = {"stage": "mnist_budget", "runs": {run: run_record(run, root) for run in RUNS},
              "provenance": metrics["provenance"]}
    out = root / RECORD
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out} (rerun on {record['provenance']['cpu']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
