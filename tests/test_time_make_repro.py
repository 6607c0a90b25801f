"""scripts/time_make_repro.py: its verdict on each rewritten file (hand-made cases), and the
README's account of the committed timing record."""
import importlib.util
import json
import re
import sys

import yaml

from qnnpipeline import paths

SPEC = importlib.util.spec_from_file_location("time_make_repro", paths.root() / "scripts" / "time_make_repro.py")
script = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(script)


def verdict(tmp_path, name, made, committed):
    path = tmp_path / name
    path.write_text(made)
    return script.compare(path, None if committed is None else committed.encode())


def notebook(outputs, count=1, metadata=None):
    return json.dumps({"metadata": metadata or {}, "cells": [
        {"cell_type": "code", "source": "x", "execution_count": count, "outputs": outputs}]})


def test_same_bytes_are_identical(tmp_path):
    assert verdict(tmp_path, "a.txt", "same", "same") == "identical"


def test_a_file_the_commit_lacks_is_new(tmp_path):
    assert verdict(tmp_path, "a.json", "{}", None) == "new"


def test_json_differing_only_in_provenance_is_result_identical(tmp_path):
    made = {"error": 1.5, "runs": [{"provenance": {"cpu": "Intel"}, "seed": 0}], "provenance": {"cpu": "Intel"},
            "seconds": 1151.0}
    committed = {"error": 1.5, "runs": [{"provenance": {"cpu": "AMD"}, "seed": 0}], "provenance": {"cpu": "AMD"},
                 "seconds": 1360.1}
    assert verdict(tmp_path, "m.json", json.dumps(made), json.dumps(committed)) == "result identical"


def test_json_differing_in_a_result_differs(tmp_path):
    made, committed = {"error": 1.5, "provenance": 1}, {"error": 1.51, "provenance": 1}
    assert verdict(tmp_path, "m.json", json.dumps(made), json.dumps(committed, indent=1)) == "differs"


def test_history_differing_only_in_seconds_is_result_identical(tmp_path):
    assert verdict(tmp_path, "h.csv", "epoch,seconds,val\n1,50.1,2.0\n",
                   "epoch,seconds,val\n1,49.7,2.0\n") == "result identical"
    assert verdict(tmp_path, "h.csv", "epoch,seconds,val\n1,50.1,2.0\n",
                   "epoch,seconds,val\n1,50.1,2.1\n") == "differs"


def test_notebook_differing_in_metadata_counts_and_durations_is_result_identical(tmp_path):
    made = notebook([{"output_type": "stream", "name": "stdout", "text": "took 3.2 s, error 1.5 %"}], 7, {"where": "Intel"})
    committed = notebook([{"output_type": "stream", "name": "stdout", "text": "took 4.1 s, error 1.5 %"}], 2, {"where": "AMD"})
    assert verdict(tmp_path, "n.ipynb", made, committed) == "result identical"


def test_notebook_whose_stream_arrived_in_two_pieces_is_result_identical(tmp_path):
    made = notebook([{"output_type": "stream", "name": "stdout", "text": ["a\n"]},
                     {"output_type": "stream", "name": "stdout", "text": "b\n"}])
    committed = notebook([{"output_type": "stream", "name": "stdout", "text": ["a\n", "b\n"]}])
    assert verdict(tmp_path, "n.ipynb", made, committed) == "result identical"
    reordered = notebook([{"output_type": "stream", "name": "stdout", "text": ["b\n", "a\n"]}])
    assert verdict(tmp_path, "n.ipynb", made, reordered) == "differs"


def test_notebook_differing_in_an_output_differs(tmp_path):
    made = notebook([{"output_type": "stream", "name": "stdout", "text": "error 1.5 %"}])
    committed = notebook([{"output_type": "stream", "name": "stdout", "text": "error 1.6 %"}])
    assert verdict(tmp_path, "n.ipynb", made, committed) == "differs"


def test_unreadable_json_differs_instead_of_failing(tmp_path):
    assert verdict(tmp_path, "m.json", "{not json", "{}") == "differs"


def test_stage_times_come_from_dvc_lines(tmp_path):
    with (tmp_path / "log").open("w") as log:
        total, stages = script.timed([sys.executable, "-c", "import time\nprint(\"Running stage 'a':\", flush=True)\n"
                                      "time.sleep(0.3)\nprint(\"Running stage 'b':\", flush=True)"], tmp_path, log)
    assert list(stages) == ["a", "b"] and stages["a"] >= 0.3 and total >= 0.3


RECORD = paths.root() / "results" / "reproducibility" / "make_repro.json"
# What notebook 06 measures is the speed of the machine it runs on (README "Reproducibility"),
# and dvc.lock, the claims and the README carry its numbers.
MACHINE_DEPENDENT = re.compile(r"06_runtime_and_energy|06_xnor_speedup|^results/tables/claims\.csv$|^README\.md$|^dvc\.lock$")


def record():
    return json.loads(RECORD.read_text())


def test_the_timed_run_recomputed_every_stage_dvc_repro_runs():
    stages = yaml.safe_load((paths.root() / "dvc.yaml").read_text())["stages"]
    assert list(record()["stages"]) == [name for name, stage in stages.items() if not stage.get("frozen")]
    assert sum(record()["stages"].values()) <= record()["repro_seconds"] + 1  # each rounded to 0.1 s


def test_the_timed_run_gave_every_result_but_the_machines_speed_again():
    files = record()["files"]
    assert any(name.startswith("results/notebooks/") for name in files)
    moved = {name: verdict for name, verdict in files.items()
             if verdict not in ("identical", "result identical") and not MACHINE_DEPENDENT.search(name)}
    assert not moved


def test_the_readme_quotes_the_timed_run():
    run, readme = record(), (paths.root() / "README.md").read_text()
    provenance = run["provenance"]
    assert provenance["dirty"] is False and provenance["numerics"]["profile"] == "portable"
    minutes = lambda seconds: f"{seconds / 60:.1f}"  # noqa: E731
    notebooks = sum(run["stages"][name] for name in ("binarization", "gradient_accumulation", "ste_derivation",
                                                     "round_quantization"))
    rest = run["repro_seconds"] - notebooks - run["stages"]["mnist_budget"]
    vendor = "Intel Xeon" if "Intel" in provenance["cpu"] else "AMD EPYC"
    quoted = (f"**{minutes(run['total_seconds'])} min** on a 2-core {vendor}, from a clean clone of commit "
              f"{provenance['commit'][:7]} (set-up {minutes(run['setup_seconds'])} min, notebooks 01-04 "
              f"{minutes(notebooks)}, `mnist_budget` {minutes(run['stages']['mnist_budget'])}, the rest "
              f"{minutes(rest)})")
    assert quoted in " ".join(readme.split())
