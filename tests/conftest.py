"""Suite-wide test settings."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread for the whole suite.

    The tests run thousands of tiny products; on a 2-core machine extra threads only add
    synchronisation, and when other processes share the cores (CI neighbours, parallel
    jobs) oversubscription made small products 30-150x slower in measurements here.
    Subprocess tests (torchrun, resume) set their own thread count.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
