"""Shared fixtures: every test gets its own short stream folder ($DAO_SHM_DIR)."""

from __future__ import annotations

import pytest

from dao.testing import temporary_stream_dir, unique_name


@pytest.fixture(autouse=True)
def stream_dir():
    """A fresh folder for the test's streams, emptied (files and semaphores) afterwards."""
    with temporary_stream_dir() as folder:
        yield folder


@pytest.fixture
def name() -> str:
    """A stream name no other process uses (semaphore names are machine-wide)."""
    return unique_name()


@pytest.fixture
def procs():
    """A list to append started ``subprocess.Popen`` objects to: each is killed at teardown,
    whatever happened, and its pipes and output files closed."""
    started: list = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        for f in (p.stdout, p.stderr, *getattr(p, "files", ())):
            if f:
                f.close()
