"""Pulling GGUF files from a Hugging Face Hub: the fake one of tests.support.fake_hub, serving
the real SmolLM2 GGUF, spoken to by the real `huggingface_hub` library and HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants

from berth.common.errors import NotFound, Unauthenticated, Unavailable
from berth.models.adapters.hub import HubClient
from berth.models.domain.huggingface import HubFile, choose_gguf, hub_repo_id
from berth.models.domain.reference import parse_reference
from tests.support.fake_hub import FakeHub, fake_hub
from tests.support.models import SMOLLM2_FILE, smollm2_gguf
from tests.support.processes import free_port

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
# What `berth model pull hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF` asks the Hub for.
REPO_ID = hub_repo_id(parse_reference(f"hf.co/{REPO}"))
Q8_FILE = "SmolLM2-135M-Instruct.Q8_0.gguf"
Q8_BYTES = b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 16
README = b"# SmolLM2-135M-Instruct-GGUF\n"
TOKEN = "hf_fake_token_for_tests"


def repo_files() -> dict[str, Path | bytes]:
    return {SMOLLM2_FILE: smollm2_gguf(), Q8_FILE: Q8_BYTES, "README.md": README}


@pytest.fixture(scope="module")
def smollm2_sha256() -> str:
    digest = hashlib.sha256()
    with smollm2_gguf().open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with fake_hub({REPO: repo_files()}) as running:
        yield running


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home and HF_HOME; no token in the environment unless a test puts one."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / ".cache" / "huggingface"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return home


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def partials(work_dir: Path) -> list[Path]:
    return list(work_dir.glob("*.incomplete"))


def contents(folder: Path) -> list[Path] | None:
    """Everything under `folder`, None when it does not exist."""
    return sorted(folder.rglob("*")) if folder.exists() else None


def by_path(files: list[HubFile]) -> dict[str, HubFile]:
    return {f.path: f for f in files}


async def test_the_listing_gives_the_commit_and_each_file_with_size_and_sha256(
    hub: FakeHub, smollm2_sha256: str
) -> None:
    commit, files = await HubClient(hub.endpoint).list_files(REPO_ID, None)
    assert commit == hub.repo(REPO).commit
    assert [f.path for f in files] == ["README.md", SMOLLM2_FILE, Q8_FILE]
    listed = by_path(files)
    assert listed[SMOLLM2_FILE] == HubFile(
        SMOLLM2_FILE, smollm2_gguf().stat().st_size, smollm2_sha256
    )
    assert listed[Q8_FILE] == HubFile(Q8_FILE, len(Q8_BYTES), hashlib.sha256(Q8_BYTES).hexdigest())
    assert listed["README.md"] == HubFile("README.md", len(README), None)  # not in LFS


async def test_the_lower_cased_id_of_a_reference_reaches_the_canonical_repository(
    hub: FakeHub,
) -> None:
    await HubClient(hub.endpoint).list_files(REPO_ID, None)
    paths = [path for _, path, _ in hub.requests]
    assert f"/api/models/{REPO_ID}/revision/main" in paths
    assert f"/api/models/{REPO}/revision/main" in paths  # followed the Hub's redirect


async def test_the_file_a_pull_chooses_downloads_byte_for_byte_with_progress(
    hub: FakeHub, tmp_path: Path, smollm2_sha256: str
) -> None:
    client = HubClient(hub.endpoint)
    commit, files = await client.list_files(REPO_ID, None)
    [chosen] = choose_gguf(files, parse_reference(f"hf.co/{REPO}").tag)  # no Q4_K_M: the first
    assert chosen.path == SMOLLM2_FILE
    progress: list[int] = []
    path = await client.download(REPO_ID, chosen, commit, None, tmp_path / "work", progress.append)
    assert path == tmp_path / "work" / SMOLLM2_FILE
    assert path.stat().st_size == chosen.size
    assert sha256_of(path) == smollm2_sha256 == chosen.sha256
    assert progress[-1] == chosen.size
    assert progress == sorted(progress)
    assert partials(tmp_path / "work") == []


async def test_a_quantization_tag_downloads_that_file(hub: FakeHub, tmp_path: Path) -> None:
    client = HubClient(hub.endpoint)
    commit, files = await client.list_files(REPO_ID, None)
    [chosen] = choose_gguf(files, parse_reference(f"hf.co/{REPO}:q8_0").tag)
    path = await client.download(REPO_ID, chosen, commit, None, tmp_path, lambda _: None)
    assert path.read_bytes() == Q8_BYTES


async def test_an_interrupted_download_resumes_where_it_stopped(
    hub: FakeHub, tmp_path: Path, smollm2_sha256: str
) -> None:
    client = HubClient(hub.endpoint)
    commit, files = await client.list_files(REPO_ID, None)
    model = by_path(files)[SMOLLM2_FILE]
    cut = 10_000_000
    hub.cut_next_download_after(cut)
    first: list[int] = []
    with pytest.raises(Unavailable) as caught:
        await client.download(REPO_ID, model, commit, None, tmp_path, first.append)
    assert "resumes" in caught.value.message
    assert first[-1] == cut
    [partial] = partials(tmp_path)
    assert partial.stat().st_size == cut
    assert not (tmp_path / SMOLLM2_FILE).exists()

    second: list[int] = []
    path = await client.download(REPO_ID, model, commit, None, tmp_path, second.append)
    assert sha256_of(path) == smollm2_sha256
    assert second[0] == cut  # the bytes already there count
    assert second[-1] == model.size
    assert ("GET", f"/{REPO}/resolve/{commit}/{SMOLLM2_FILE}", f"bytes={cut}-") in hub.requests
    assert partials(tmp_path) == []


async def test_a_cancelled_download_stops_writing_and_resumes_later(
    hub: FakeHub, tmp_path: Path, smollm2_sha256: str
) -> None:
    client = HubClient(hub.endpoint)
    commit, files = await client.list_files(REPO_ID, None)
    model = by_path(files)[SMOLLM2_FILE]
    loop = asyncio.get_running_loop()
    receiving = asyncio.Event()
    release = threading.Event()

    def on_progress(done: int) -> None:  # called from the download's thread
        if done and not release.is_set():
            loop.call_soon_threadsafe(receiving.set)
            release.wait(30)

    download = asyncio.create_task(
        client.download(REPO_ID, model, commit, None, tmp_path, on_progress)
    )
    await receiving.wait()
    download.cancel()
    await asyncio.sleep(0)  # the task takes its cancellation before the thread goes on
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await download
    [partial] = partials(tmp_path)
    kept = partial.stat().st_size
    assert 0 < kept < model.size  # stopped at the next chunk, and has stopped for good

    path = await client.download(REPO_ID, model, commit, None, tmp_path, lambda _: None)
    assert sha256_of(path) == smollm2_sha256
    assert hub.requests[-1] == ("GET", f"/{REPO}/resolve/{commit}/{SMOLLM2_FILE}", f"bytes={kept}-")


async def test_a_file_already_complete_is_not_fetched_again(hub: FakeHub, tmp_path: Path) -> None:
    client = HubClient(hub.endpoint)
    commit, files = await client.list_files(REPO_ID, None)
    q8 = by_path(files)[Q8_FILE]
    await client.download(REPO_ID, q8, commit, None, tmp_path, lambda _: None)
    asked = len(hub.requests)
    progress: list[int] = []
    path = await client.download(REPO_ID, q8, commit, None, tmp_path, progress.append)
    assert path.read_bytes() == Q8_BYTES
    assert len(hub.requests) == asked
    assert progress == [q8.size]


async def test_a_gated_repository_needs_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fake_hub({REPO: {Q8_FILE: Q8_BYTES}}, token=TOKEN) as gated:
        client = HubClient(gated.endpoint)
        commit, files = await client.list_files(REPO_ID, None)  # a gated listing is public
        [q8] = files

        with pytest.raises(Unauthenticated) as caught:
            await client.download(REPO_ID, q8, commit, None, tmp_path, lambda _: None)
        assert caught.value.reason == "REGISTRY_UNAUTHORIZED"
        assert caught.value.metadata == {"registry": "hf.co", "repository": REPO_ID}
        assert "HF_TOKEN" in caught.value.message

        # The library is never let to find a token of its own: only the one berth passes.
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        with pytest.raises(Unauthenticated):
            await client.download(REPO_ID, q8, commit, None, tmp_path, lambda _: None)

        path = await client.download(REPO_ID, q8, commit, TOKEN, tmp_path, lambda _: None)
        assert path.read_bytes() == Q8_BYTES


async def test_a_wrong_token_is_refused_without_showing_it() -> None:
    with (
        fake_hub({REPO: {Q8_FILE: Q8_BYTES}}, token=TOKEN) as gated,
        pytest.raises(Unauthenticated) as caught,
    ):
        await HubClient(gated.endpoint).list_files(REPO_ID, "hf_wrong")
    assert caught.value.reason == "REGISTRY_UNAUTHORIZED"
    assert "hf_wrong" not in caught.value.message
    assert "HF_TOKEN" in caught.value.message


@pytest.mark.parametrize("token", [None, TOKEN])
async def test_an_unknown_repository_is_not_found(hub: FakeHub, token: str | None) -> None:
    with pytest.raises(NotFound) as caught:
        await HubClient(hub.endpoint).list_files("huggingfacetb/no-such-model", token)
    assert caught.value.reason == "MODEL_NOT_FOUND"
    assert "hf.co/huggingfacetb/no-such-model" in caught.value.message


async def test_an_unknown_file_or_revision_is_not_found(hub: FakeHub, tmp_path: Path) -> None:
    client = HubClient(hub.endpoint)
    commit, _ = await client.list_files(REPO_ID, None)
    missing = HubFile("SmolLM2-135M-Instruct.Q2_K.gguf", 10, None)
    with pytest.raises(NotFound) as caught:
        await client.download(REPO_ID, missing, commit, None, tmp_path, lambda _: None)
    assert caught.value.reason == "MODEL_NOT_FOUND"
    with pytest.raises(NotFound):
        await client.list_files(REPO_ID, None, revision="no-such-branch")


async def test_a_hub_that_does_not_answer_is_unavailable(tmp_path: Path) -> None:
    client = HubClient(f"http://127.0.0.1:{free_port()}", timeout_s=5)
    with pytest.raises(Unavailable) as caught:
        await client.list_files(REPO_ID, None)
    assert caught.value.metadata["registry"] == "hf.co"


async def test_nothing_is_read_from_or_written_to_a_hugging_face_cache(
    hub: FakeHub, tmp_path: Path, home: Path
) -> None:
    library_home = Path(constants.HF_HOME)  # fixed when the library was imported
    before = contents(library_home)
    client = HubClient(hub.endpoint)
    commit, files = await client.list_files(REPO_ID, None)
    for file in files:
        await client.download(REPO_ID, file, commit, None, tmp_path / "work", lambda _: None)
    assert contents(home) == []
    assert contents(library_home) == before
    assert contents(tmp_path / "work") == sorted(
        tmp_path / "work" / path for path in by_path(files)
    )
