"""Shared test settings."""

import os

import pytest
import torch

# The CLI's default `--threads auto` honours OMP_NUM_THREADS: the tests' in-process and subprocess commands run
# one thread (tiny tensors: faster, and immune to a busy machine); tests/test_threads.py checks `auto` itself.
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tests use tiny tensors: one intra-op thread is faster and immune to a busy machine (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
