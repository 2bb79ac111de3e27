"""The artifact store's one interface (core.engine.run_folder.artifact_store), the same tests against a folder and against a
real S3-compatible server (`rclone serve s3`, tests/s3_server.py): put, get, streaming open, size, list and
delete by prefix, locations, a multipart-sized checkpoint, missing keys, a store that refuses; the choice by
the URL's scheme; and fetch_verified, the node cache keyed by sha256 that never keeps a file whose hash is
not the recorded one."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from core.common.errors import StorageError, UserInputError
from core.engine.run_folder.artifact_store import FolderStore, check_key, fetch_verified, open_store, sha256_of, valid_key
from core.engine.run_folder.artifact_store.s3 import S3Store
from tests.s3_server import free_port


@pytest.fixture(params=["folder", "s3"])
def store(request, tmp_path, monkeypatch):
    """An empty store of either kind."""
    if request.param == "folder":
        return FolderStore(tmp_path / "artifacts")
    server = request.getfixturevalue("s3_server")
    for name, value in server.credentials().items():
        monkeypatch.setenv(name, value)
    return open_store(f"s3://{server.new_bucket()}/some/prefix", endpoint_url=server.endpoint)


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_put_get_open_size_list_and_delete(store, tmp_path):
    source = write(tmp_path / "local" / "metrics.csv", b"epoch,loss\n1,0.5\n")
    store.put("jobs/1-abc/metrics.csv", source)
    store.put("jobs/1-abc/plots/loss.png", write(tmp_path / "local" / "loss.png", b"\x89PNG"))
    store.put("jobs/12-def/best.pt", write(tmp_path / "local" / "best.pt", b"weights"))
    store.put("jobs/1-abc/metrics.csv", write(tmp_path / "local" / "again.csv", b"epoch,loss\n1,0.4\n"))  # replaced

    assert store.size("jobs/1-abc/metrics.csv") == 17 and store.exists("jobs/1-abc/metrics.csv")
    assert store.size("jobs/1-abc/nothing.csv") is None and not store.exists("jobs/1-abc/nothing.csv")
    with store.open("jobs/1-abc/metrics.csv") as stream:
        assert stream.read() == b"epoch,loss\n1,0.4\n"
    store.get("jobs/12-def/best.pt", tmp_path / "fetched" / "best.pt")
    assert (tmp_path / "fetched" / "best.pt").read_bytes() == b"weights"
    # A folder by path components: jobs/1 is no prefix of jobs/12.
    assert [(o.key, o.size) for o in store.list("jobs/1-abc")] == [
        ("jobs/1-abc/metrics.csv", 17),
        ("jobs/1-abc/plots/loss.png", 4),
    ]
    assert store.list("jobs/1") == [] and store.prefix_bytes("jobs/1-abc") == 21
    assert store.key_of(store.location("jobs/12-def/best.pt")) == "jobs/12-def/best.pt"
    assert store.key_of("/elsewhere/best.pt") is None and store.key_of("s3://another/jobs/1/best.pt") is None

    with pytest.raises(FileNotFoundError, match="jobs/1-abc/gone.pt"):
        store.open("jobs/1-abc/gone.pt").read()
    with pytest.raises(FileNotFoundError, match="jobs/1-abc/gone.pt"):
        store.get("jobs/1-abc/gone.pt", tmp_path / "fetched" / "gone.pt")
    assert not (tmp_path / "fetched" / "gone.pt").exists()  # nothing half-written

    assert store.delete("jobs/12-def/best.pt") == 7 and store.delete("jobs/12-def/best.pt") == 0
    assert store.delete_prefix("jobs/1-abc") == 21
    assert store.list("jobs/1-abc") == [] and store.list("jobs") == []


def test_a_checkpoint_past_the_multipart_size_round_trips_intact(store, tmp_path):
    content = os.urandom(2 * S3Store.PART_BYTES + 1000)  # S3Store sends it in three parts
    source = write(tmp_path / "last.pt", content)
    store.put("jobs/3-k/last.pt", source)
    store.get("jobs/3-k/last.pt", tmp_path / "back.pt")
    assert sha256_of(tmp_path / "back.pt") == hashlib.sha256(content).hexdigest() == sha256_of(source)
    assert store.size("jobs/3-k/last.pt") == len(content)


def test_keys_are_relative_paths_that_stay_inside(store):
    for bad in ("", "/etc/passwd", "../x", "jobs/../../x", "jobs//x", "jobs/./x", "a\\b"):
        assert not valid_key(bad)
        with pytest.raises(ValueError, match="not an artifact key"):
            check_key(bad)
        assert not store.exists(bad)
    assert valid_key("jobs/1-abc/best.pt")


def test_the_url_scheme_chooses_the_store(tmp_path, s3_server):
    assert open_store(str(tmp_path / "a")).local_root == tmp_path / "a"
    assert open_store(f"file://{tmp_path / 'b'}").local_root == tmp_path / "b"
    remote = open_store("s3://bucket/deep/prefix/", endpoint_url=s3_server.endpoint)
    assert remote.local_root is None and remote.url == "s3://bucket/deep/prefix"
    assert remote.location("jobs/1-a/best.pt") == "s3://bucket/deep/prefix/jobs/1-a/best.pt"
    for bad in ("ftp://host/x", "file://otherhost/x", "s3://"):
        with pytest.raises(UserInputError, match="ARTIFACTS_URL"):
            open_store(bad)


def test_a_store_that_refuses_or_cannot_be_reached_is_one_line(tmp_path, s3_server, monkeypatch):
    for name, value in s3_server.credentials().items():
        monkeypatch.setenv(name, value)
    source = write(tmp_path / "best.pt", b"weights")
    missing_bucket = open_store("s3://no-such-bucket-here/p", endpoint_url=s3_server.endpoint)
    with pytest.raises(
        StorageError, match=r"^artifact store s3://no-such-bucket-here/p: cannot store jobs/1-a/best.pt: "
    ) as caught:
        missing_bucket.put("jobs/1-a/best.pt", source)
    assert "\n" not in str(caught.value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    wrong_secret = open_store(f"s3://{s3_server.new_bucket()}", endpoint_url=s3_server.endpoint)
    with pytest.raises(StorageError, match="cannot list jobs/1-a"):
        wrong_secret.list("jobs/1-a")
    nobody = open_store("s3://bucket", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageError, match="cannot look up jobs/1-a/best.pt"):
        nobody.size("jobs/1-a/best.pt")


def test_a_presigned_download_url_names_the_object_and_the_file(s3_server, monkeypatch):
    for name, value in s3_server.credentials().items():
        monkeypatch.setenv(name, value)
    store = open_store("s3://bucket/prefix", endpoint_url=s3_server.endpoint)
    url = store.presigned_url("jobs/4-k/best.pt", "best.pt", 300)
    assert url.startswith(f"{s3_server.endpoint}/bucket/prefix/jobs/4-k/best.pt?")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url and "best.pt" in url.split("?", 1)[1]
    assert FolderStore(Path("/tmp")).presigned_url("jobs/4-k/best.pt", "best.pt", 300) is None


def test_a_folder_store_never_follows_a_link_out_when_it_removes(tmp_path):
    store = FolderStore(tmp_path / "artifacts")
    outside = write(tmp_path / "precious.txt", b"keep me")
    store.put("jobs/5-k/metrics.csv", write(tmp_path / "m.csv", b"x,y\n"))
    (tmp_path / "artifacts" / "jobs" / "5-k" / "link.csv").symlink_to(outside)
    assert [o.key for o in store.list("jobs/5-k")] == ["jobs/5-k/metrics.csv"]  # a link is no stored file
    assert store.delete_prefix("jobs/5-k") == 4
    assert outside.read_bytes() == b"keep me" and not (tmp_path / "artifacts" / "jobs" / "5-k").exists()
    # Storing a file that is already in place (a worker wrote its run folder there) copies nothing.
    written = write(tmp_path / "artifacts" / "jobs" / "6-k" / "best.pt", b"w")
    inode = written.stat().st_ino
    store.put("jobs/6-k/best.pt", written)
    assert written.stat().st_ino == inode


def test_fetch_verified_caches_by_sha256_and_refuses_a_changed_file(store, tmp_path):
    content = b"model weights " * 1000
    store.put("jobs/7-k/best.pt", write(tmp_path / "best.pt", content))
    digest = hashlib.sha256(content).hexdigest()
    cache = tmp_path / "cache"
    with fetch_verified(store, "jobs/7-k/best.pt", digest, cache, None) as held:
        assert held.path == cache / "checkpoints" / f"{digest}.pt" and held.path.read_bytes() == content
    store.delete("jobs/7-k/best.pt")
    with fetch_verified(store, "jobs/7-k/best.pt", digest, cache, None) as again:  # a later job on this node
        assert again.path.read_bytes() == content  # from the cache: the store no longer has it

    store.put("jobs/8-k/best.pt", write(tmp_path / "changed.pt", b"not what was recorded"))
    with pytest.raises(UserInputError, match=r"jobs/8-k/best.pt in the artifact store does not match its recorded sha256"):
        fetch_verified(store, "jobs/8-k/best.pt", "0" * 64, cache, None)
    assert sorted(path.name for path in (cache / "checkpoints").iterdir()) == [f".{digest}.pt.lock", f"{digest}.pt"]
    with pytest.raises(FileNotFoundError):
        fetch_verified(store, "jobs/9-k/best.pt", "1" * 64, cache, None)
