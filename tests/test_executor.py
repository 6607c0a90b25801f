"""qnnlib.executor and run_grid on it: serial, a local Ray, and a real two-node Ray cluster
on this machine (two `ray start` processes on the loopback), checked against the serial
run bit for bit (issue 20)."""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from qnnlib import executor, experiments
from support import synthetic_splits

ray = pytest.importorskip("ray")

CONFIGS = [{"name": f"h{h}", "model": {"hidden": h, "depth": 1}} for h in (16, 24)]
TRAIN = {"epochs": 1, "batch_size": 50, "progress": False}
COMPARED = ["best_epoch", "best_val_error", "test_error", "final_val_error", "final_test_error"]


def grid(splits, **options):
    return experiments.run_grid(CONFIGS, splits, seeds=(0, 1), train=TRAIN, **options)


def same_numbers(a, b) -> bool:
    return (a.runs[COMPARED].equals(b.runs[COMPARED])
            and a.history.drop(columns="seconds").equals(b.history.drop(columns="seconds")))


@pytest.fixture(scope="module")
def splits():
    return synthetic_splits(300)


@pytest.fixture(scope="module")
def serial(splits):
    return grid(splits, workers=1)


def test_one_worker_runs_here_without_ray(splits, serial, monkeypatch):
    monkeypatch.setattr(executor, "ray_available", lambda: False)
    again = grid(splits, workers=2)  # Ray absent: serial, in this process
    assert again.nodes == ["local"] * 4 and same_numbers(again, serial)


def test_a_rerun_trains_only_the_missing_runs(splits, serial, tmp_path):
    first = grid(splits, workers=1, store=tmp_path)
    stored = sorted(tmp_path.glob("*.json"))
    assert len(stored) == 4 and same_numbers(first, serial)
    stored[0].unlink()
    again = grid(splits, workers=1, store=tmp_path)
    assert again.nodes.count("stored") == 3 and same_numbers(again, serial)
    changed = experiments.run_grid(CONFIGS, splits, seeds=(0, 1), train={**TRAIN, "lr_start": 1e-3},
                                   workers=1, store=tmp_path)
    assert changed.nodes.count("stored") == 0  # other settings: another key, trained again


def _fails_on_two(job):
    if job == 2:
        raise ValueError("bad job")
    return job * 10


def test_serially_an_error_stops_at_once_with_earlier_results_kept():
    kept = {}
    with pytest.raises(ValueError, match="bad job"):
        executor.run_tasks(_fails_on_two, [1, 2, 3], on_result=kept.__setitem__)
    assert kept == {0: 10}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _processes_of(cluster: dict) -> list:
    """The processes of the test cluster and their children, such as its workers: its
    daemons name its directory or its address in their command lines."""
    marks, found = (cluster["temp_dir"], cluster["address"]), {}
    for process in psutil.process_iter(["cmdline"]):
        if any(mark in part for part in process.info["cmdline"] or [] for mark in marks):
            for member in [process, *process.children(recursive=True)]:
                found[member.pid] = member
    return list(found.values())


@pytest.fixture(scope="module")
def cluster():
    """A Ray head and a second Ray node on this machine, one CPU each, stopped afterwards.
    Both listen on the loopback only, so the test runs them without Ray's token
    authentication (a driver reads its token settings when it imports ray, before
    this fixture could give it one). They keep their files in a directory of their own,
    by which the tests find their processes: a Ray that something else runs on this
    machine (a `dvc repro` beside the tests) is never touched (`ray stop` would stop it)."""
    executor.shutdown()
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="qnn-test-ray-")  # short: Ray's socket paths must fit
    base = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]
    subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                    f"--temp-dir={temp_dir}", "--include-dashboard=false", *common],
                   env=base, check=True, capture_output=True, timeout=120)
    address = f"127.0.0.1:{port}"
    try:
        subprocess.run([ray_cli, "start", f"--address={address}", "--node-ip-address=127.0.0.1", *common],
                       env=base, check=True, capture_output=True, timeout=120)
        yield {"address": address, "temp_dir": temp_dir}
    finally:
        executor.shutdown()
        processes = _processes_of({"address": address, "temp_dir": temp_dir})
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(processes, timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_a_grid_on_two_nodes_equals_the_serial_run(splits, serial, cluster, tmp_path):
    on_cluster = grid(splits, workers=2, address=cluster["address"], store=tmp_path)
    assert len(set(on_cluster.nodes)) == 2  # both nodes trained
    assert same_numbers(on_cluster, serial)
    assert len(list(tmp_path.glob("*.json"))) == 4  # every run came home as it finished


@pytest.mark.slow
def test_a_killed_worker_loses_no_finished_run(splits, serial, cluster, tmp_path):
    """SIGKILL one busy Ray worker of the test cluster mid-grid: its run is retried, the
    grid completes, and every run equals the serial one."""
    killed = []

    def kill_one_busy_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for process in _processes_of(cluster):
                with contextlib.suppress(psutil.NoSuchProcess):
                    if any("ray::_task" in part for part in process.cmdline()):
                        process.send_signal(signal.SIGKILL)
                        killed.append(process.pid)
                        return
            time.sleep(0.05)

    slow = {**TRAIN, "epochs": 200}  # runs of about half a second: a window the killer can't miss
    killer = threading.Thread(target=kill_one_busy_worker)
    killer.start()
    result = experiments.run_grid(CONFIGS, splits, seeds=(0, 1), train=slow, workers=2,
                                  address=cluster["address"], store=tmp_path)
    killer.join()
    reference = experiments.run_grid(CONFIGS, splits, seeds=(0, 1), train=slow, workers=1)
    assert killed and same_numbers(result, reference)
    assert len(list(tmp_path.glob("*.json"))) == 4


@pytest.mark.slow
def test_on_ray_a_failed_task_is_named_after_the_others_finish(cluster):
    def fails_on_two(job):  # defined here: workers receive it by value (not importable there)
        if job == 2:
            raise ValueError("bad job")
        return job * 10

    kept = {}
    with pytest.raises(executor.TasksFailed, match="second: .*bad job") as failed:
        executor.run_tasks(fails_on_two, [1, 2, 3], workers=2, address=cluster["address"],
                           names=["first", "second", "third"], on_result=kept.__setitem__)
    assert kept == {0: 10, 2: 30} and list(failed.value.failures) == ["second"]


LOCAL_DEFAULT = """
import sys
sys.path.insert(0, "tests")
import qnnpipeline
from qnnlib import executor, experiments
from support import synthetic_splits
from test_executor import CONFIGS, TRAIN, same_numbers
splits, longer = synthetic_splits(300), {**TRAIN, "epochs": 3}
reference = experiments.run_grid(CONFIGS, splits, seeds=(0, 1, 2, 3), train=longer, workers=1)
experiments.run_grid(CONFIGS, splits, seeds=(0, 1), train=TRAIN, workers=2)  # the local Ray starts
both = experiments.run_grid(CONFIGS, splits, seeds=(0, 1, 2, 3), train=longer, workers=2)
executor.shutdown()
print("here:", "local" in both.nodes, "ray:", bool(set(both.nodes) - {"local"}), "same:", same_numbers(both, reference))
"""


@pytest.mark.slow
def test_the_local_default_trains_here_and_on_a_local_ray():
    """Several workers, no cluster: this process trains while a local Ray starts, then
    both train; the same numbers as the serial run. In a fresh process: the local Ray is
    the first Ray it starts."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", LOCAL_DEFAULT], cwd=root,
                            capture_output=True, text=True, timeout=300)
    assert "here: True ray: True same: True" in result.stdout, result.stdout + result.stderr[-3000:]
