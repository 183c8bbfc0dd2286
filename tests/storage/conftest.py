"""``backend`` runs each blob store test on both stores (the SeaweedFS server comes from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.storage.backends import Backend, LocalBackend, S3Backend


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return LocalBackend(tmp_path / "blobs")
    return S3Backend(request.getfixturevalue("s3_server"))
