"""A client of the OCI distribution API (v2) for model artifacts: manifests and blobs, pulled
and pushed, with each request authenticated by `registry_auth` and each registry error mapped
to a BerthError.

Blobs stream: `download_blob` appends to a partial file and resumes it with `Range`, and
does not verify the digest (its caller hashes the file); a connection cut mid-body raises
Unavailable, never returns a short file as if complete.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import httpx2

from berth.common.credentials import RegistryCredentials
from berth.common.errors import (
    BerthError,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from berth.common.version import berth_version
from berth.models.adapters.registry_auth import (
    REGISTRY_UNAUTHORIZED,
    REGISTRY_UNAVAILABLE,
    RegistryAuthenticator,
    RegistryCall,
    unauthenticated,
    unreachable,
)
from berth.models.domain.digests import DigestMismatch, sha256_digest
from berth.models.domain.media_types import (
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_V2,
    OCI_INDEX,
    OCI_MANIFEST,
)
from berth.models.domain.reference import Reference

__all__ = [
    "MODEL_NOT_FOUND",
    "REGISTRY_UNAUTHORIZED",
    "REGISTRY_UNAVAILABLE",
    "FetchedManifest",
    "RegistryClient",
]

MODEL_NOT_FOUND = "MODEL_NOT_FOUND"

# Indexes are accepted so that the caller can say it refuses them, rather than get a 404.
_MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST_V2, OCI_INDEX, DOCKER_MANIFEST_LIST))
_MANIFEST_MAX_BYTES = 4 << 20  # Docker's limit too
_ERROR_BODY_MAX_BYTES = 64 << 10
_NOT_FOUND_CODES = {"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"}


@dataclass(frozen=True)
class FetchedManifest:
    body: bytes
    media_type: str
    digest: str  # sha256 of body, checked against the registry's and the reference's


class RegistryClient:
    """One HTTP/1.1 connection pool and token cache for every registry berth talks to."""

    def __init__(self, *, timeout_s: float = 30.0, chunk_bytes: int = 8 << 20) -> None:
        self._chunk_bytes = chunk_bytes
        self._http = httpx2.AsyncClient(
            http1=True,
            http2=False,
            timeout=httpx2.Timeout(timeout_s),
            headers={"User-Agent": f"berth/{berth_version()}"},
        )
        self._auth = RegistryAuthenticator(self._http)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- pull ---

    async def fetch_manifest(self, ref: Reference, creds: RegistryCredentials) -> FetchedManifest:
        """The manifest `ref` names (by digest when it has one, else by tag), verified."""
        call = RegistryCall(ref, creds, push=False)
        url = self._url(ref, f"manifests/{ref.digest or ref.tag or 'latest'}")
        headers = {"Accept": _MANIFEST_ACCEPT}
        async with self._exchange(call, "GET", url, headers=headers) as response:
            body = await _read_at_most(response, _MANIFEST_MAX_BYTES, f"{call.what}: manifest")
        digest = sha256_digest(body)
        announced = response.headers.get("docker-content-digest", "")
        for expected in (ref.digest, announced):
            if expected and expected.startswith("sha256:") and expected != digest:
                raise DigestMismatch(f"manifest of {ref.name}", expected, digest)
        return FetchedManifest(body, _media_type(response, body), digest)

    async def fetch_blob(
        self, ref: Reference, digest: str, creds: RegistryCredentials, *, max_bytes: int = 4 << 20
    ) -> bytes:
        """A small blob (a config) in memory, verified against `digest`."""
        call = RegistryCall(ref, creds, push=False)
        async with self._exchange(call, "GET", self._blob_url(ref, digest), digest=digest) as got:
            data = await _read_at_most(got, max_bytes, f"{call.what}: blob {digest}")
        actual = sha256_digest(data)
        if actual != digest:
            raise DigestMismatch(f"blob {digest} of {ref.name}", digest, actual)
        return data

    async def download_blob(
        self,
        ref: Reference,
        digest: str,
        dest: Path,
        creds: RegistryCredentials,
        on_progress: Callable[[int], None],
        on_data: Callable[[int, bytes], None] | None = None,
    ) -> None:
        """Bring blob `digest` into `dest`, resuming what `dest` already holds.

        `on_progress(bytes now in dest)` is called every `chunk_bytes` and at the end;
        `on_data(offset in dest, bytes)` for every piece written, so the caller can hash as
        the bytes arrive. The digest is NOT verified here: the caller does it. A connection
        cut mid-body raises Unavailable with the bytes received kept in `dest`, so a retry
        resumes.
        """
        call = RegistryCall(ref, creds, push=False)
        have = _size_of(dest)
        sink = on_data or _ignore
        if not await self._download_from(call, digest, dest, have, on_progress, sink):
            await self._download_from(call, digest, dest, 0, on_progress, sink)

    async def blob_exists(self, ref: Reference, digest: str, creds: RegistryCredentials) -> bool:
        return await self._exists(RegistryCall(ref, creds, push=False), digest)

    # --- push ---

    async def upload_blob(
        self,
        ref: Reference,
        digest: str,
        size: int,
        source: Path | bytes,
        creds: RegistryCredentials,
        on_progress: Callable[[int], None],
    ) -> None:
        """Upload `size` bytes of `source` as blob `digest`, unless the repository has it.

        A blob of one chunk goes in one PUT; a bigger one in PATCHes of `chunk_bytes`
        (Content-Range) and a closing PUT. The bytes are hashed on the way: if they do not
        match `digest` the upload is cancelled and DigestMismatch raised.
        """
        call = RegistryCall(ref, creds, push=True)
        if await self._exists(call, digest):
            on_progress(size)
            return
        location = await self._start_upload(call)
        hasher, sent, last = hashlib.sha256(), 0, b""
        async with aclosing(_chunks(call, source, size, self._chunk_bytes)) as pieces:
            async for data in pieces:
                hasher.update(data)
                if size <= self._chunk_bytes:
                    last = data  # one piece: it goes with the closing PUT
                    continue
                location = await self._patch(call, location, data, sent)
                sent += len(data)
                on_progress(sent)
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest:
            await self._cancel_upload(call, location)
            raise DigestMismatch(f"blob for {ref.name}", digest, actual)
        await self._finish_upload(call, location, digest, last)
        on_progress(size)

    async def push_manifest(
        self, ref: Reference, body: bytes, media_type: str, creds: RegistryCredentials
    ) -> str:
        """PUT the manifest under `ref`'s tag; the digest the registry reports."""
        call = RegistryCall(ref, creds, push=True)
        url = self._url(ref, f"manifests/{ref.tag or sha256_digest(body)}")
        headers = {"Content-Type": media_type}
        async with self._exchange(call, "PUT", url, headers=headers, content=body, ok=(201,)) as r:
            return r.headers.get("docker-content-digest") or sha256_digest(body)

    # --- the steps of a download and an upload ---

    async def _download_from(
        self,
        call: RegistryCall,
        digest: str,
        dest: Path,
        have: int,
        on_progress: Callable[[int], None],
        on_data: Callable[[int, bytes], None],
    ) -> bool:
        """One GET of the blob from byte `have`; False when it must start again from 0."""
        headers = {"Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        url = self._blob_url(call.ref, digest)
        ok = (200, 206, 416)
        async with self._exchange(call, "GET", url, headers=headers, ok=ok, digest=digest) as r:
            if r.status_code == 416:  # nothing after `have`: done only if that is the size
                done = have > 0 and _range_total(r.headers.get("content-range")) == have
                if done:
                    on_progress(have)
                return done
            start = have if r.status_code == 206 else 0
            if r.status_code == 206 and _range_start(r.headers.get("content-range")) != have:
                return False
            await self._receive(call, r, dest, start, on_progress, on_data)
        return True

    async def _receive(
        self,
        call: RegistryCall,
        response: httpx2.Response,
        dest: Path,
        start: int,
        on_progress: Callable[[int], None],
        on_data: Callable[[int, bytes], None],
    ) -> None:
        length = response.headers.get("content-length")
        written = reported = start
        with dest.open("ab" if start else "wb") as file:
            async for piece in response.aiter_raw():
                file.write(piece)
                on_data(written, piece)
                written += len(piece)
                if written - reported >= self._chunk_bytes:
                    file.flush()
                    on_progress(reported := written)
        if length is not None and length.isdigit() and written - start != int(length):
            raise Unavailable(
                f"{call.what}: the registry {call.host} sent {written - start} of"
                f" {length} bytes before the connection ended",
                reason=REGISTRY_UNAVAILABLE,
                metadata=call.metadata,
            )
        on_progress(written)

    async def _exists(self, call: RegistryCall, digest: str) -> bool:
        url = self._blob_url(call.ref, digest)
        async with self._exchange(call, "HEAD", url, ok=(200, 404), digest=digest) as response:
            return response.status_code == 200

    async def _start_upload(self, call: RegistryCall) -> httpx2.URL:
        url = self._url(call.ref, "blobs/uploads/")
        async with self._exchange(call, "POST", url, ok=(202,)) as response:
            return _location(call, response)

    async def _patch(
        self, call: RegistryCall, location: httpx2.URL, data: bytes, offset: int
    ) -> httpx2.URL:
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + len(data) - 1}",
        }
        async with self._exchange(
            call, "PATCH", location, headers=headers, content=data, ok=(202,)
        ) as response:
            return _location(call, response)

    async def _finish_upload(
        self, call: RegistryCall, location: httpx2.URL, digest: str, data: bytes
    ) -> None:
        url = location.copy_merge_params({"digest": digest})
        headers = {"Content-Type": "application/octet-stream"}
        async with self._exchange(call, "PUT", url, headers=headers, content=data, ok=(201,)):
            pass

    async def _cancel_upload(self, call: RegistryCall, location: httpx2.URL) -> None:
        try:
            async with self._exchange(call, "DELETE", location, ok=(204, 404)):
                pass
        except BerthError:
            pass  # the registry forgets abandoned uploads itself

    # --- one exchange, authenticated, with errors mapped ---

    @asynccontextmanager
    async def _exchange(
        self,
        call: RegistryCall,
        method: str,
        url: httpx2.URL | str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        ok: tuple[int, ...] = (200,),
        digest: str | None = None,
    ) -> AsyncIterator[httpx2.Response]:
        """The response to one request (streamed, closed on exit) when its status is in
        `ok`; otherwise the registry's error as a BerthError. Network failures, while
        sending or while reading the body inside the block, become Unavailable."""
        response = await self._authorized(call, method, url, headers or {}, content)
        try:
            if response.status_code not in ok:
                await self._fail(call, response, digest)
            yield response
        except httpx2.RequestError as error:
            raise unreachable(call, error) from None
        finally:
            await response.aclose()

    async def _authorized(
        self,
        call: RegistryCall,
        method: str,
        url: httpx2.URL | str,
        headers: dict[str, str],
        content: bytes | None,
    ) -> httpx2.Response:
        """Send with what is known; on a 401 answer its challenge and send once more."""
        auth = self._auth.known_auth(call)
        response = await self._send(call, method, url, headers, content, auth)
        if response.status_code != 401:
            return response
        answer = await self._auth.answer(call, response)
        if answer is None or answer == auth:
            return response
        await response.aclose()
        return await self._send(call, method, url, headers, content, answer)

    async def _send(
        self,
        call: RegistryCall,
        method: str,
        url: httpx2.URL | str,
        headers: dict[str, str],
        content: bytes | None,
        auth: str | None,
    ) -> httpx2.Response:
        if auth:
            headers = {**headers, "Authorization": auth}
        request = self._http.build_request(method, url, headers=headers, content=content)
        try:
            # Blobs may redirect to storage elsewhere; httpx drops Authorization for another
            # origin, as that storage expects.
            return await self._http.send(
                request, stream=True, follow_redirects=method in ("GET", "HEAD")
            )
        except httpx2.RequestError as error:
            raise unreachable(call, error) from None

    # --- errors ---

    async def _fail(
        self, call: RegistryCall, response: httpx2.Response, digest: str | None
    ) -> NoReturn:
        status = response.status_code
        body = await _read_at_most(response, _ERROR_BODY_MAX_BYTES, call.what, truncate=True)
        errors = _oci_errors(body)
        codes = {code for code, _ in errors}
        detail = "; ".join(f"{code}: {message}" if message else code for code, message in errors)
        if status == 401:
            raise unauthenticated(call, response)
        if status == 403 or "DENIED" in codes:
            raise PermissionDenied(
                f"{call.what}: the registry {call.host} denied access"
                + (f" ({detail})" if detail else ""),
                reason=REGISTRY_UNAUTHORIZED,
                metadata=call.metadata,
            )
        if status == 404 or codes & _NOT_FOUND_CODES:
            raise _not_found(call, digest)
        message = f"{call.what}: the registry {call.host} answered {status}"
        message += f" ({detail})" if detail else ""
        metadata = {**call.metadata, "status": str(status)}
        if status == 429 or status >= 500:
            raise Unavailable(message, reason=REGISTRY_UNAVAILABLE, metadata=metadata)
        raise FailedPrecondition(message, metadata=metadata)

    # --- URLs ---

    def _url(self, ref: Reference, suffix: str) -> str:
        scheme = "http" if ref.insecure else "https"
        return f"{scheme}://{ref.api_host}/v2/{ref.repository}/{suffix}"

    def _blob_url(self, ref: Reference, digest: str) -> str:
        return self._url(ref, f"blobs/{digest}")


def _ignore(offset: int, data: bytes) -> None:
    pass


def _not_found(call: RegistryCall, digest: str | None) -> NotFound:
    if digest is None:
        text = f"model {call.ref.name} not found in registry {call.host}"
        return NotFound(text, reason=MODEL_NOT_FOUND, metadata=call.metadata)
    text = f"{call.what}: blob {digest} not found in registry {call.host}"
    return NotFound(text, reason=MODEL_NOT_FOUND, metadata={**call.metadata, "digest": digest})


def _oci_errors(body: bytes) -> list[tuple[str, str]]:
    """The (code, message) pairs of an OCI error body `{"errors": [...]}`."""
    try:
        found = json.loads(body)
    except ValueError:
        return []
    errors = found.get("errors") if isinstance(found, dict) else None
    if not isinstance(errors, list):
        return []
    return [
        (str(item.get("code", "")), str(item.get("message", ""))[:200])
        for item in errors
        if isinstance(item, dict)
    ]


def _media_type(response: httpx2.Response, body: bytes) -> str:
    header = response.headers.get("content-type", "").split(";", 1)[0].strip()
    if header and header not in ("application/json", "application/octet-stream"):
        return header
    try:
        found = json.loads(body)
    except ValueError:
        return header
    declared = found.get("mediaType") if isinstance(found, dict) else None
    return declared if isinstance(declared, str) else header


def _location(call: RegistryCall, response: httpx2.Response) -> httpx2.URL:
    location = response.headers.get("location")
    if not location:
        raise FailedPrecondition(
            f"{call.what}: the registry {call.host} gave no upload location",
            metadata=call.metadata,
        )
    return response.url.join(location)


def _size_of(path: Path) -> int:
    """How many bytes a partial download already holds (0 when there is none)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _range_start(content_range: str | None) -> int | None:
    """The first byte of `Content-Range: bytes START-END/SIZE`."""
    match = re.fullmatch(r"bytes (\d+)-\d+/(?:\d+|\*)", (content_range or "").strip())
    return int(match.group(1)) if match else None


def _range_total(content_range: str | None) -> int | None:
    """The SIZE of `Content-Range: bytes */SIZE` (a 416's answer)."""
    match = re.fullmatch(r"bytes [^/]+/(\d+)", (content_range or "").strip())
    return int(match.group(1)) if match else None


async def _read_at_most(
    response: httpx2.Response, limit: int, what: str, *, truncate: bool = False
) -> bytes:
    """The body, decoded; FailedPrecondition when it is over `limit` (or cut at it)."""
    data = bytearray()
    async for piece in response.aiter_bytes():
        data += piece
        if len(data) > limit:
            if truncate:
                return bytes(data[:limit])
            raise FailedPrecondition(f"{what} is larger than {limit} bytes")
    return bytes(data)


async def _chunks(
    call: RegistryCall, source: Path | bytes, size: int, chunk_bytes: int
) -> AsyncIterator[bytes]:
    """`size` bytes of `source` in pieces of `chunk_bytes` (files read off the event loop);
    FailedPrecondition when the source holds fewer."""
    if isinstance(source, bytes):
        if len(source) < size:
            raise _short_source(call, size)
        for offset in range(0, size, chunk_bytes):
            yield source[offset : min(offset + chunk_bytes, size)]
        return
    with source.open("rb") as file:
        left = size
        while left:
            data = await asyncio.to_thread(file.read, min(chunk_bytes, left))
            if not data:
                raise _short_source(call, size)
            left -= len(data)
            yield data


def _short_source(call: RegistryCall, size: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"{call.what}: the content to upload has fewer than the {size} bytes announced",
        metadata=call.metadata,
    )
