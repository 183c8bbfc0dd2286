"""Fixtures shared across test folders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.seaweedfs import S3Server, SeaweedFS


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 endpoint (``weed mini`` on 127.0.0.1) with its credentials; stopped at the end of the session."""
    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
