"""The SeaweedFS helper itself: a failed start-up must stop the server and show its log."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.seaweedfs import SeaweedFS, weed_binary


def test_the_weed_binary_is_installed() -> None:
    assert weed_binary().is_file()


def test_a_start_up_timeout_stops_the_server_and_shows_its_log(tmp_path: Path) -> None:
    server = SeaweedFS(tmp_path, startup_timeout=0)
    with pytest.raises(RuntimeError, match="did not answer S3") as exc:
        server.__enter__()
    assert "-master.telemetry=false" in str(exc.value)  # the log starts with the command line
    assert server._process is None
    server.stop()  # stopping twice is harmless
