"""Fixtures for the training tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread for each training test module, its module fixtures included: the models are
    tiny, so two threads on two busy cores are slower than one, and runs compared bit for bit with
    launched ranks (OMP_NUM_THREADS=1) must use one thread as they do."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
