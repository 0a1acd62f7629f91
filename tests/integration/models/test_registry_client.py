"""The registry client against a real registry (distribution 2.8 on 127.0.0.1): push and pull
of blobs and manifests, resumed downloads, basic and token authentication, and the errors a
user sees when a model is missing, a registry is down or credentials are wrong."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import pytest

from berth.common.credentials import ANONYMOUS, RegistryCredentials
from berth.common.errors import NotFound, PermissionDenied, Unauthenticated, Unavailable
from berth.models.adapters.registry import RegistryClient
from berth.models.domain.digests import DigestMismatch, sha256_digest
from berth.models.domain.media_types import GGUF, MODEL_CONFIG, OCI_INDEX, OCI_MANIFEST
from berth.models.domain.reference import Reference, parse_reference
from tests.support.cutting_proxy import cutting_proxy
from tests.support.models import smollm2_gguf
from tests.support.registry import RegistryServer, registry_server

MiB = 1 << 20
ALICE = RegistryCredentials(username="alice", password="wonderland-7")
USERS = {"alice": "wonderland-7"}
CONFIG = json.dumps({"config": {"format": "gguf"}, "descriptor": {}}).encode()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    with registry_server(tmp_path) as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[RegistryClient]:
    async with RegistryClient(chunk_bytes=1 * MiB) as registry_client:
        yield registry_client


def _ref(host: str, name: str = "berth/tiny:v1") -> Reference:
    return parse_reference(f"{host}/{name}")


def _manifest(config: bytes, layer_digest: str, layer_size: int) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": MODEL_CONFIG,
            "digest": sha256_digest(config),
            "size": len(config),
        },
        "layers": [{"mediaType": GGUF, "digest": layer_digest, "size": layer_size}],
    }
    return json.dumps(manifest).encode()


async def _push_model(
    client: RegistryClient,
    ref: Reference,
    layer: bytes | Path,
    creds: RegistryCredentials = ANONYMOUS,
) -> tuple[bytes, str, str]:
    """Push a one-layer model; (manifest body, its digest as the registry says, layer digest)."""
    if isinstance(layer, Path):
        layer_digest, size = _sha256_file(layer), _size(layer)
    else:
        layer_digest, size = sha256_digest(layer), len(layer)
    await client.upload_blob(ref, sha256_digest(CONFIG), len(CONFIG), CONFIG, creds, _ignore)
    await client.upload_blob(ref, layer_digest, size, layer, creds, _ignore)
    body = _manifest(CONFIG, layer_digest, size)
    digest = await client.push_manifest(ref, body, OCI_MANIFEST, creds)
    return body, digest, layer_digest


def _ignore(_: int) -> None:
    pass


def _size(path: Path) -> int:
    return path.stat().st_size


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(MiB):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


# --- push and pull ---


async def test_pushed_model_comes_back_identical(
    registry: RegistryServer, client: RegistryClient, tmp_path: Path
) -> None:
    ref = _ref(registry.host)
    layer = os.urandom(3 * MiB + 123)
    progress: list[int] = []
    config = b'{"config": {"format": "gguf"}}'
    await client.upload_blob(ref, sha256_digest(config), len(config), config, ANONYMOUS, _ignore)
    await client.upload_blob(
        ref, sha256_digest(layer), len(layer), layer, ANONYMOUS, progress.append
    )
    body = _manifest(config, sha256_digest(layer), len(layer))
    pushed = await client.push_manifest(ref, body, OCI_MANIFEST, ANONYMOUS)

    assert pushed == sha256_digest(body)
    assert progress[-1] == len(layer) and progress == sorted(progress)
    # Bigger than one chunk: sent as 4 PATCHes of at most 1 MiB, then one closing PUT.
    assert len(registry.wait_for_request("PATCH", "/v2/berth/tiny/blobs/uploads/", 202)) == 4

    fetched = await client.fetch_manifest(ref, ANONYMOUS)
    assert (fetched.body, fetched.digest, fetched.media_type) == (body, pushed, OCI_MANIFEST)
    by_digest = await client.fetch_manifest(_ref(registry.host, f"berth/tiny@{pushed}"), ANONYMOUS)
    assert by_digest.body == body
    assert await client.fetch_blob(ref, sha256_digest(config), ANONYMOUS) == config

    dest = tmp_path / "layer.partial"
    seen: list[int] = []
    await client.download_blob(ref, sha256_digest(layer), dest, ANONYMOUS, seen.append)
    assert dest.read_bytes() == layer
    assert seen[-1] == len(layer) and len(seen) >= 3  # told as it goes, not only at the end


async def test_a_blob_the_registry_has_is_not_uploaded_again(
    registry: RegistryServer, client: RegistryClient
) -> None:
    ref = _ref(registry.host)
    blob = os.urandom(64 * 1024)
    digest = sha256_digest(blob)
    assert not await client.blob_exists(ref, digest, ANONYMOUS)
    await client.upload_blob(ref, digest, len(blob), blob, ANONYMOUS, _ignore)
    assert await client.blob_exists(ref, digest, ANONYMOUS)
    progress: list[int] = []
    await client.upload_blob(ref, digest, len(blob), blob, ANONYMOUS, progress.append)
    assert progress == [len(blob)]
    registry.wait_for_request("HEAD", f"/blobs/{digest}", 200)
    assert registry.count_requests("POST", "/blobs/uploads/") == 1


async def test_upload_of_bytes_not_matching_their_digest_is_refused(
    registry: RegistryServer, client: RegistryClient, tmp_path: Path
) -> None:
    ref = _ref(registry.host)
    claimed = sha256_digest(b"what the manifest says")
    source = tmp_path / "changed.bin"
    source.write_bytes(os.urandom(2 * MiB + 5))
    with pytest.raises(DigestMismatch) as caught:
        await client.upload_blob(ref, claimed, 2 * MiB + 5, source, ANONYMOUS, _ignore)
    assert caught.value.reason == "DIGEST_MISMATCH"
    assert not await client.blob_exists(ref, claimed, ANONYMOUS)
    assert not await client.blob_exists(ref, _sha256_file(source), ANONYMOUS)


async def test_corrupted_blob_in_the_registry_is_detected(
    registry: RegistryServer, client: RegistryClient
) -> None:
    ref = _ref(registry.host)
    await _push_model(client, ref, os.urandom(4096))
    registry.corrupt_blob(sha256_digest(CONFIG))
    with pytest.raises(DigestMismatch, match="does not match its digest"):
        await client.fetch_blob(ref, sha256_digest(CONFIG), ANONYMOUS)


async def test_an_index_is_returned_as_it_is(
    registry: RegistryServer, client: RegistryClient
) -> None:
    ref = _ref(registry.host)
    body, digest, _ = await _push_model(client, ref, os.urandom(4096))
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body)}],
    }
    index_body = json.dumps(index).encode()
    multi = _ref(registry.host, "berth/tiny:multi")
    await client.push_manifest(multi, index_body, OCI_INDEX, ANONYMOUS)
    fetched = await client.fetch_manifest(multi, ANONYMOUS)
    assert (fetched.media_type, fetched.body) == (OCI_INDEX, index_body)


async def test_real_gguf_model_round_trip(registry: RegistryServer, tmp_path: Path) -> None:
    gguf = smollm2_gguf()
    ref = _ref(registry.host, "ai/smollm2:q4_1")
    async with RegistryClient() as client:
        _, _, layer_digest = await _push_model(client, ref, gguf)
        assert layer_digest == _sha256_file(gguf)
        dest = tmp_path / "smollm2.gguf"
        await client.download_blob(ref, layer_digest, dest, ANONYMOUS, _ignore)
    assert dest.stat().st_size == gguf.stat().st_size
    assert _sha256_file(dest) == layer_digest


# --- resumed downloads ---


async def test_cut_download_raises_unavailable_and_the_next_call_resumes(
    registry: RegistryServer, client: RegistryClient, tmp_path: Path
) -> None:
    blob = os.urandom(6 * MiB)
    digest = sha256_digest(blob)
    await client.upload_blob(_ref(registry.host), digest, len(blob), blob, ANONYMOUS, _ignore)
    port = int(registry.host.rsplit(":", 1)[1])
    dest = tmp_path / "blob.partial"
    with cutting_proxy("127.0.0.1", port) as proxy:
        through_proxy = _ref(proxy.address)
        proxy.cut_next_response_after(2 * MiB)
        with pytest.raises(Unavailable) as caught:
            await client.download_blob(through_proxy, digest, dest, ANONYMOUS, _ignore)
        assert caught.value.reason == "REGISTRY_UNAVAILABLE"
        assert proxy.address in caught.value.message
        kept = dest.stat().st_size
        assert 0 < kept < len(blob)

        before = proxy.bytes_to_client
        await client.download_blob(through_proxy, digest, dest, ANONYMOUS, _ignore)
        second = proxy.bytes_to_client - before

    assert _sha256_file(dest) == digest
    assert second < len(blob) - kept + 64 * 1024  # only the rest (and headers) came again
    resumed = registry.wait_for_request("GET", f"/blobs/{digest}", 206)
    assert resumed[-1].size == len(blob) - kept


async def test_download_of_a_complete_file_sends_nothing_and_a_bad_partial_starts_over(
    registry: RegistryServer, client: RegistryClient, tmp_path: Path
) -> None:
    ref = _ref(registry.host)
    blob = os.urandom(300 * 1024)
    digest = sha256_digest(blob)
    await client.upload_blob(ref, digest, len(blob), blob, ANONYMOUS, _ignore)

    complete = tmp_path / "complete"
    complete.write_bytes(blob)
    seen: list[int] = []
    await client.download_blob(ref, digest, complete, ANONYMOUS, seen.append)
    assert complete.read_bytes() == blob and seen == [len(blob)]
    registry.wait_for_request("GET", f"/blobs/{digest}", 416)

    too_long = tmp_path / "too-long"
    too_long.write_bytes(blob + b"leftover of something else")
    await client.download_blob(ref, digest, too_long, ANONYMOUS, _ignore)
    assert too_long.read_bytes() == blob


# --- what a user is told ---


async def test_missing_model_or_blob_is_not_found(
    registry: RegistryServer, client: RegistryClient, tmp_path: Path
) -> None:
    await _push_model(client, _ref(registry.host), os.urandom(1024))
    for name in ("berth/tiny:nope", "berth/absent:v1"):
        with pytest.raises(NotFound) as caught:
            await client.fetch_manifest(_ref(registry.host, name), ANONYMOUS)
        assert caught.value.reason == "MODEL_NOT_FOUND"
        assert f"{registry.host}/{name}" in caught.value.message
    absent = sha256_digest(b"never pushed")
    with pytest.raises(NotFound) as blob_missing:
        await client.download_blob(_ref(registry.host), absent, tmp_path / "x", ANONYMOUS, _ignore)
    assert absent in blob_missing.value.message


async def test_stopped_registry_is_unavailable(tmp_path: Path, client: RegistryClient) -> None:
    with registry_server(tmp_path) as registry:
        host = registry.host
        registry.stop()
        with pytest.raises(Unavailable) as caught:
            await client.fetch_manifest(_ref(host), ANONYMOUS)
    assert caught.value.reason == "REGISTRY_UNAVAILABLE"
    assert host in caught.value.message and caught.value.metadata["registry"] == host


# --- htpasswd (basic) authentication ---


async def test_basic_auth_push_needs_the_right_password(
    tmp_path: Path, client: RegistryClient
) -> None:
    with registry_server(tmp_path, users=USERS) as registry:
        ref = _ref(registry.host)
        with pytest.raises(Unauthenticated) as anonymous:
            await _push_model(client, ref, os.urandom(1024))
        assert anonymous.value.reason == "REGISTRY_UNAUTHORIZED"
        assert anonymous.value.message == (
            f"push to {ref.name}: the registry requires authentication (no credentials given)"
        )
        assert anonymous.value.metadata == {"registry": registry.host}

        wrong = RegistryCredentials(username="alice", password="not-her-password")
        with pytest.raises(Unauthenticated) as refused:
            await _push_model(client, ref, os.urandom(1024), wrong)
        assert "credentials given" in refused.value.message
        assert "not-her-password" not in refused.value.message

        body, digest, _ = await _push_model(client, ref, os.urandom(1024), ALICE)
        fetched = await client.fetch_manifest(ref, ALICE)
        assert (fetched.body, fetched.digest) == (body, digest)
        with pytest.raises(Unauthenticated):
            await client.fetch_manifest(ref, ANONYMOUS)


# --- token (Bearer) authentication ---


async def test_token_auth_anonymous_pulls_and_only_users_push(
    tmp_path: Path, client: RegistryClient
) -> None:
    with registry_server(tmp_path, users=USERS, token_auth=True) as registry:
        tokens = registry.token_server
        assert tokens is not None
        ref = _ref(registry.host)
        with pytest.raises(Unauthenticated) as anonymous:
            await _push_model(client, ref, os.urandom(1024))
        assert "requires authentication (no credentials given)" in anonymous.value.message

        wrong = RegistryCredentials(username="alice", password="guess")
        with pytest.raises(Unauthenticated) as refused:
            await _push_model(client, ref, os.urandom(1024), wrong)
        assert "refused the credentials given" in refused.value.message
        assert tokens.requests[-1].status == 401

        body, digest, _ = await _push_model(client, ref, os.urandom(1024), ALICE)
        alice_tokens = [r for r in tokens.requests if r.user == "alice"]
        assert [r.scopes for r in alice_tokens] == [("repository:berth/tiny:pull,push",)]

        # Anonymous pulls are allowed, with their own token: never alice's.
        fetched = await client.fetch_manifest(ref, ANONYMOUS)
        assert fetched.digest == digest and fetched.body == body
        with pytest.raises(Unauthenticated):
            await client.push_manifest(ref, body, OCI_MANIFEST, ANONYMOUS)

        # alice's push token serves her pulls: no new token asked.
        asked = len(tokens.requests)
        assert (await client.fetch_manifest(ref, ALICE)).digest == digest
        assert len(tokens.requests) == asked


async def test_token_auth_with_identity_and_registry_tokens(
    tmp_path: Path, client: RegistryClient
) -> None:
    with registry_server(tmp_path, users=USERS, token_auth=True, anonymous_actions=()) as registry:
        tokens = registry.token_server
        assert tokens is not None
        ref = _ref(registry.host)
        identity = RegistryCredentials(identity_token=tokens.issue_refresh_token("alice"))
        _, digest, _ = await _push_model(client, ref, os.urandom(1024), identity)
        assert tokens.requests[-1].method == "POST" and tokens.requests[-1].user == "alice"

        with pytest.raises(Unauthenticated) as anonymous:
            await client.fetch_manifest(ref, ANONYMOUS)
        assert anonymous.value.message == (
            f"pull {ref.name}: the registry requires authentication (no credentials given),"
            " or the model does not exist"
        )

        answer = httpx2.get(
            tokens.realm,
            params={"service": tokens.service, "scope": "repository:berth/tiny:pull"},
            auth=("alice", USERS["alice"]),
        ).json()
        bearer = RegistryCredentials(registry_token=answer["token"])
        asked = len(tokens.requests)
        assert (await client.fetch_manifest(ref, bearer)).digest == digest
        assert len(tokens.requests) == asked
        with pytest.raises(PermissionDenied) as denied:
            await client.push_manifest(ref, b"{}", OCI_MANIFEST, bearer)
        assert denied.value.reason == "REGISTRY_UNAUTHORIZED"
