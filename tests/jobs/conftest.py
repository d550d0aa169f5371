"""Fixtures shared by the job tests."""

import pytest


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray instance with 2 CPUs for one test module (skipped without Ray)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
