"""Fixtures several test files share."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Small trainings on a shared 2-core machine: one torch thread avoids OpenMP threads
    waiting on each other, and fixes the summation order so reruns are bit-identical."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
