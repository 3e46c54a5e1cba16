"""Fixtures of the serving tests: a tiny model per test module, and a private PostgreSQL cluster shared by the
whole session."""

from __future__ import annotations

import itertools

import pytest

from tests.serving.helpers import train_tiny_model
from tests.serving.pg import PrivateCluster, why_unavailable

_names = itertools.count()


@pytest.fixture(scope="module")
def model_dir(request, tmp_path_factory):
    """The tiny PAL-B model (`train_tiny_model`), trained once per test module."""
    return train_tiny_model(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]) / "model")


@pytest.fixture(scope="session")
def pg_cluster():
    reason = why_unavailable()
    if reason:
        pytest.skip(f"PostgreSQL store tests skipped: {reason}")
    cluster = PrivateCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster):
    """A fresh, empty database on the private cluster."""
    return pg_cluster.new_database(f"palrm_test_{next(_names)}")
