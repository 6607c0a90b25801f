"""The budget trainings rerun on another machine, kept to check the committed results' bits.

    dvc repro -f mnist_budget                         # on another CPU: rewrites the outputs
    python scripts/cross_machine_rerun.py             # keeps what the rerun made
    git checkout HEAD -- results/metrics results/tables dvc.lock   # the committed outputs again
    python -m pytest tests/test_cross_machine_rerun.py

The other seeds of both runs (stage `mnist_seeds`, frozen, so run its command directly):

    python -m qnnpipeline.seeds --config params.yaml --section mnist_seeds
    python scripts/cross_machine_rerun.py --stage mnist_seeds
    git checkout HEAD -- results/metrics results/tables

It writes `results/reproducibility/<stage>_rerun.json`: for each training, its history
without the seconds column, its best epoch and errors, the MD5 of its checkpoint file (what
`dvc.lock` records for the `mnist_budget` ones; the other seeds' checkpoints are not
tracked) and its wall time, with the rerun's provenance (commit, CPU, numeric settings).
For `mnist_seeds` it also keeps the rerun's summary (mean ± sd over the seeds and the
BNN-minus-control interval). The test compares that record with the committed outputs,
which another machine made: same bits, or it fails and names what differs.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

from qnnpipeline.runs import write_json

STAGES = {  # the trainings each stage makes (mnist_seeds reads seed 0 from mnist_budget)
    "mnist_budget": ("mnist_cpu", "mnist_fp"),
    "mnist_seeds": ("mnist_cpu_seed1", "mnist_cpu_seed2", "mnist_fp_seed1", "mnist_fp_seed2"),
}
SUMMARY = ("best_epoch", "best_val_error", "test_error", "epochs")


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
    parser.add_argument("--stage", choices=sorted(STAGES), default="mnist_budget")
    args = parser.parse_args(argv)
    root, runs = Path(args.root), STAGES[args.stage]
    metrics = json.loads((root / "results" / "metrics" / f"{runs[0]}.json").read_text())
    record = {"stage": args.stage, "runs": {run: run_record(run, root) for run in runs},
              "provenance": metrics["provenance"]}
    if args.stage == "mnist_seeds":
        summary = json.loads((root / "results" / "metrics" / "mnist_seeds.json").read_text())
        record["summary"] = {key: summary[key] for key in ("runs", "seeds", "difference")}
    out = root / "results" / "reproducibility" / f"{args.stage}_rerun.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, record)
    print(f"wrote {out} (rerun on {record['provenance']['cpu']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
