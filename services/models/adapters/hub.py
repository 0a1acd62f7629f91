"""The Hugging Face Hub: a repository's files, and one file's download that resumes.

The listing is `huggingface_hub`'s `model_info` with blob metadata (sizes, LFS sha256). A file
is resolved with its `hf_hub_url` and `get_hf_file_metadata` (the HEAD that follows the Hub's
redirects, e.g. from a lower-cased repository id to the canonical one, and gives the etag and
size), then fetched with a plain ranged GET: `hf_hub_download` writes every attempt to a new
temporary file and deletes it on failure, so it cannot resume a pull that was interrupted.

Tokens are always passed explicitly, `False` when there is none, so the library never falls
back to a token of its own (HF_TOKEN, the token file under HF_HOME); its cache is never used.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoSibling
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

from berth.common.errors import (
    BerthError,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from berth.common.version import berth_version
from berth.models.domain.huggingface import HubFile
from berth.models.domain.reference import HUGGING_FACE

DEFAULT_ENDPOINT = "https://huggingface.co"
_LIBRARY = "berth"


class _Stopped(Exception):
    """The download was cancelled: its thread stops at the next chunk."""


class HubClient:
    """One Hub endpoint; safe to share, every call stands alone."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, timeout_s: float = 30.0) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._timeout_s = timeout_s

    async def list_files(
        self, repo_id: str, token: str | None, revision: str = "main"
    ) -> tuple[str, list[HubFile]]:
        """(the commit `revision` is at, the repository's files sorted by path)."""
        return await asyncio.to_thread(self._list_files, repo_id, token, revision)

    async def download(
        self,
        repo_id: str,
        file: HubFile,
        commit: str,
        token: str | None,
        work_dir: Path,
        on_progress: Callable[[int], None],
    ) -> Path:
        """Fetch `file` at `commit` into `work_dir` (at its repository path); its local path.

        A complete file already there is returned as it is. Otherwise the bytes go to
        `<name>.<etag>.incomplete` next to it, which a later call with the same `work_dir`
        continues with a Range request; the caller owns `work_dir` and keeps it between
        attempts. `on_progress(bytes_done)` is called from a worker thread as bytes arrive
        (bytes already there included), so it must be thread-safe. Nothing is hashed: the
        caller checks `file.sha256`. Cancelling waits until the thread has stopped writing.
        """
        stop = threading.Event()
        work = asyncio.ensure_future(
            asyncio.to_thread(
                self._download, repo_id, file, commit, token, work_dir, on_progress, stop
            )
        )
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            stop.set()
            await asyncio.wait([work])
            if not work.cancelled():
                work.exception()  # how the stopped thread ended matters to nobody now
            raise

    def _api(self, token: str | None) -> HfApi:
        return HfApi(
            endpoint=self._endpoint,
            token=_token(token),
            library_name=_LIBRARY,
            library_version=berth_version(),
        )

    def _list_files(
        self, repo_id: str, token: str | None, revision: str
    ) -> tuple[str, list[HubFile]]:
        with _hub_errors(repo_id, token):
            info = self._api(token).model_info(
                repo_id,
                revision=revision,
                files_metadata=True,
                timeout=self._timeout_s,
                token=_token(token),
            )
        if not info.sha:
            raise Unavailable(
                f"{HUGGING_FACE}/{repo_id}: the Hub did not say which commit {revision} is",
                metadata=_where(repo_id),
            )
        files = sorted((_hub_file(s) for s in info.siblings or []), key=lambda f: f.path)
        return info.sha, files

    def _download(
        self,
        repo_id: str,
        file: HubFile,
        commit: str,
        token: str | None,
        work_dir: Path,
        on_progress: Callable[[int], None],
        stop: threading.Event,
    ) -> Path:
        target = _local_path(work_dir, file.path)
        if target.is_file() and target.stat().st_size == file.size:
            on_progress(file.size)
            return target
        with _hub_errors(repo_id, token, file.path):
            location, headers, size, label = self._resolve(repo_id, file, commit, token)
            partial = target.with_name(f"{target.name}.{label}.incomplete")
            target.parent.mkdir(parents=True, exist_ok=True)
            self._fetch(location, headers, partial, size, on_progress, stop, repo_id)
        os.replace(partial, target)
        return target

    def _resolve(
        self, repo_id: str, file: HubFile, commit: str, token: str | None
    ) -> tuple[str, dict[str, str], int, str]:
        """Where to GET the file, with which headers; its size; a label for its partial file."""
        url = hf_hub_url(repo_id, file.path, revision=commit, endpoint=self._endpoint)
        metadata = get_hf_file_metadata(
            url,
            token=_token(token),
            timeout=self._timeout_s,
            library_name=_LIBRARY,
            library_version=berth_version(),
            endpoint=self._endpoint,
        )
        headers = build_hf_headers(
            token=_token(token), library_name=_LIBRARY, library_version=berth_version()
        )
        headers["Accept-Encoding"] = "identity"  # ranges count bytes of the file itself
        if _origin(metadata.location) != _origin(url):
            headers.pop("authorization", None)  # a CDN's signed URL: the token stays home
        size = metadata.size if metadata.size is not None else file.size
        label = re.sub(r"[^0-9A-Za-z]", "", metadata.etag or file.sha256 or commit)[:64]
        return metadata.location, headers, size, label

    def _fetch(
        self,
        url: str,
        headers: dict[str, str],
        partial: Path,
        size: int,
        on_progress: Callable[[int], None],
        stop: threading.Event,
        repo_id: str,
    ) -> None:
        """Complete `partial` up to `size` bytes, from where it stops."""
        done: int | None = None
        for _ in range(2):  # once more only when the Hub would not resume the partial file
            start = _partial_size(partial, size)
            if start == size:
                on_progress(size)
                return
            done = self._fetch_from(url, headers, partial, start, on_progress, stop, repo_id)
            if done is not None:
                break
        if done != size:
            if done is not None and done > size:
                partial.unlink()
            raise Unavailable(
                f"{HUGGING_FACE}/{repo_id}: got {done or 0} bytes of a {size}-byte file;"
                " pulling again resumes it",
                metadata=_where(repo_id),
            )

    def _fetch_from(
        self,
        url: str,
        headers: dict[str, str],
        partial: Path,
        done: int,
        on_progress: Callable[[int], None],
        stop: threading.Event,
        repo_id: str,
    ) -> int | None:
        """Append to `partial` from byte `done`; its size then, None if the range was refused."""
        asked = {**headers, "Range": f"bytes={done}-"} if done else headers
        with (
            httpx2.Client(timeout=httpx2.Timeout(self._timeout_s), follow_redirects=True) as client,
            client.stream("GET", url, headers=asked) as response,
        ):
            if response.status_code == 416:  # what we have is not the start of this file
                partial.unlink(missing_ok=True)
                return None
            if response.status_code >= 400:
                response.read()
                hf_raise_for_status(response)
            if response.status_code != 206 or not _resumes_at(response, done):
                done = 0  # the whole file came back: start over
            on_progress(done)
            with partial.open("ab" if done else "wb") as out:
                try:
                    # As the bytes arrive: a re-chunking buffer would lose its bytes on a cut.
                    for chunk in response.iter_bytes():
                        if stop.is_set():
                            raise _Stopped
                        out.write(chunk)
                        done += len(chunk)
                        on_progress(done)
                except httpx2.TransportError as error:
                    raise Unavailable(
                        f"{HUGGING_FACE}/{repo_id}: the download stopped after {done} bytes;"
                        " pulling again resumes it",
                        metadata=_where(repo_id),
                    ) from error
        return done


def _partial_size(partial: Path, size: int) -> int:
    """How much of the file a partial download holds; one longer than the file is dropped."""
    done = partial.stat().st_size if partial.exists() else 0
    if done > size:
        partial.unlink()
        return 0
    return done


def _token(token: str | None) -> str | bool:
    """The token to send; False stops the library from looking for one of its own."""
    return token or False


def _hub_file(sibling: RepoSibling) -> HubFile:
    if sibling.lfs is not None:
        return HubFile(sibling.rfilename, sibling.lfs.size, sibling.lfs.sha256)
    return HubFile(sibling.rfilename, sibling.size or 0, None)


def _local_path(work_dir: Path, repo_path: str) -> Path:
    parts = PurePosixPath(repo_path).parts
    if not parts or parts[0] == "/" or any(part in (".", "..") for part in parts):
        raise ValueError(f"unusable file path in a Hub repository: {repo_path!r}")
    return work_dir.joinpath(*parts)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def _resumes_at(response: httpx2.Response, offset: int) -> bool:
    match = re.fullmatch(r"bytes (\d+)-\d+/\d+", response.headers.get("Content-Range", ""))
    return match is not None and int(match[1]) == offset


def _where(repo_id: str) -> dict[str, str]:
    return {"registry": HUGGING_FACE, "repository": repo_id}


@contextmanager
def _hub_errors(repo_id: str, token: str | None, path: str | None = None) -> Iterator[None]:
    """The library's errors as berth's, with what to do about them."""
    try:
        yield
    except BerthError:
        raise
    except GatedRepoError as error:
        raise _unauthenticated(repo_id, token, gated=True) from error
    except RepositoryNotFoundError as error:
        raise _repository_not_found(repo_id, token) from error
    except (RevisionNotFoundError, EntryNotFoundError) as error:
        what = f"{path} is not in it at that revision" if path else "no such revision"
        raise NotFound(
            f"{HUGGING_FACE}/{repo_id}: {what}",
            reason="MODEL_NOT_FOUND",
            metadata={**_where(repo_id), **({"file": path} if path else {})},
        ) from error
    except HfHubHTTPError as error:
        raise _from_status(repo_id, token, error) from error
    except OfflineModeIsEnabled as error:
        raise Unavailable(
            f"cannot reach {HUGGING_FACE} for {repo_id}: HF_HUB_OFFLINE is set for berth-modeld",
            metadata=_where(repo_id),
        ) from error
    except HFValidationError as error:
        raise InvalidArgument(
            [FieldViolation("model", f"{repo_id!r} is not a Hugging Face repository id")],
            reason="INVALID_REFERENCE",
            metadata=_where(repo_id),
        ) from error
    except FileMetadataError as error:
        raise Unavailable(
            f"{HUGGING_FACE}: the answer for {repo_id} lacks the Hub's file headers"
            " (is a proxy in the way?)",
            metadata=_where(repo_id),
        ) from error
    except httpx2.TransportError as error:
        raise Unavailable(
            f"cannot reach {HUGGING_FACE} for {repo_id}: {type(error).__name__}",
            metadata=_where(repo_id),
        ) from error


def _from_status(repo_id: str, token: str | None, error: HfHubHTTPError) -> BerthError:
    response = getattr(error, "response", None)
    status = response.status_code if response is not None else 0
    if status in (401, 403):
        return _unauthenticated(repo_id, token, gated=False)
    if status == 404:
        return _repository_not_found(repo_id, token)
    return Unavailable(
        f"{HUGGING_FACE} answered {status or 'an error'} for {repo_id}; try again later",
        metadata={**_where(repo_id), "status": str(status)},
    )


def _unauthenticated(repo_id: str, token: str | None, *, gated: bool) -> Unauthenticated:
    terms = " and accept the model's conditions on its page" if gated else ""
    if token:
        message = (
            f"{HUGGING_FACE} refused the token for {repo_id}: set HF_TOKEN to an access token"
            f" that can read it{terms}"
        )
    else:
        message = f"{HUGGING_FACE}/{repo_id} needs a token: set HF_TOKEN to an access token{terms}"
    return Unauthenticated(message, reason="REGISTRY_UNAUTHORIZED", metadata=_where(repo_id))


def _repository_not_found(repo_id: str, token: str | None) -> NotFound:
    hint = "" if token else " (if it is private, set HF_TOKEN to an access token that can read it)"
    return NotFound(
        f"model {HUGGING_FACE}/{repo_id} not found{hint}",
        reason="MODEL_NOT_FOUND",
        metadata=_where(repo_id),
    )
