"""The local S3 server (SeaweedFS) that `fstore services up --s3` runs, against the real thing."""

from __future__ import annotations

import stat
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from pydantic import SecretStr

from featurestore.config import ServicesSettings
from featurestore.errors import OfflineStoreError, ServiceError
from featurestore.offline.storage import LogStorage, s3_filesystem
from featurestore.services import S3Server, free_port
from tests.conftest import unavailable


@pytest.mark.integration
def test_start_status_credentials_and_stop(tmp_path: Path) -> None:
    config = ServicesSettings(state_dir=tmp_path / "state", s3_port=free_port())
    server = S3Server(config)
    if not server.binary.exists():
        unavailable(f"SeaweedFS is not built yet ({server.binary}): run `make seaweedfs`")
    try:
        assert server.start() is True
        assert server.start() is False  # already running: nothing done
        status = server.status()
        assert status.running and status.endpoint == f"http://127.0.0.1:{config.s3_port}"
        assert str(status.data_dir).startswith(str(tmp_path))
        mode = stat.S_IMODE(server.credentials_file.stat().st_mode)
        assert mode == 0o600
        assert stat.S_IMODE(server.identities_file.stat().st_mode) == 0o600

        server.ensure_bucket("made-here")
        signed = s3_filesystem(server.offline_settings("s3://made-here"))
        signed.open_output_stream("made-here/a.txt").close()
        assert signed.get_file_info("made-here/a.txt").type == pafs.FileType.File

        # Unsigned or wrongly signed requests are refused: the secret is what lets one in.
        wrong = server.offline_settings("s3://made-here").model_copy(
            update={"s3_secret_key": SecretStr("not-the-secret-at-all")}
        )
        with pytest.raises(OfflineStoreError) as refused:
            LogStorage(wrong).glob(LogStorage(wrong).root)
        assert server.credentials().secret_key.get_secret_value() not in str(refused.value)
    finally:
        server.stop()
    assert not server.status().running
    assert server.stop() is False


def test_missing_go_names_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = ServicesSettings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ServiceError, match="Go .* needed once to build SeaweedFS"):
        S3Server(config).ensure_binary()
