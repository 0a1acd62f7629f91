"""Model references: Docker's normalisation, the host to contact, and what is refused."""

from __future__ import annotations

import pytest

from berth.common.errors import InvalidArgument
from berth.models.domain.reference import Reference, parse_reference

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "name"),
    [
        ("smollm2", "index.docker.io", "ai/smollm2", "latest", "ai/smollm2:latest"),
        ("smollm2:v2", "index.docker.io", "ai/smollm2", "v2", "ai/smollm2:v2"),
        ("ai/smollm2", "index.docker.io", "ai/smollm2", "latest", "ai/smollm2:latest"),
        ("team/llm:Q4_K_M", "index.docker.io", "team/llm", "Q4_K_M", "team/llm:Q4_K_M"),
        ("docker.io/ai/smollm2", "index.docker.io", "ai/smollm2", "latest", "ai/smollm2:latest"),
        ("docker.io/smollm2:v1", "index.docker.io", "ai/smollm2", "v1", "ai/smollm2:v1"),
        ("index.docker.io/ai/smollm2:v1", "index.docker.io", "ai/smollm2", "v1", "ai/smollm2:v1"),
        (
            "127.0.0.1:5000/ai/smollm2:v1",
            "127.0.0.1:5000",
            "ai/smollm2",
            "v1",
            "127.0.0.1:5000/ai/smollm2:v1",
        ),
        (
            "registry.example.com/team/llm",
            "registry.example.com",
            "team/llm",
            "latest",
            "registry.example.com/team/llm:latest",
        ),
        ("localhost/team/llm:v3", "localhost", "team/llm", "v3", "localhost/team/llm:v3"),
        (
            "localhost:5000/a/b/c:v1",
            "localhost:5000",
            "a/b/c",
            "v1",
            "localhost:5000/a/b/c:v1",
        ),
        (
            "[::1]:5000/team/llm:v1",
            "[::1]:5000",
            "team/llm",
            "v1",
            "[::1]:5000/team/llm:v1",
        ),
    ],
)
def test_references_are_normalised_as_docker_does(
    text: str, registry: str, repository: str, tag: str, name: str
) -> None:
    reference = parse_reference(text)
    assert (reference.registry, reference.repository, reference.tag) == (registry, repository, tag)
    assert reference.digest is None
    assert reference.name == name
    assert str(reference) == name


def test_normalised_name_parses_back_to_the_same_reference() -> None:
    for text in ("smollm2", "127.0.0.1:5000/ai/smollm2:v1", "hf.co/Org/Repo:Q4_K_M"):
        reference = parse_reference(text)
        assert parse_reference(reference.name) == reference


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1:5000/smollm2:v1", "registry.example.com/smollm2:v1"],
)
def test_a_single_component_on_another_registry_gets_no_hub_namespace(text: str) -> None:
    # `ai/` is Docker Hub's default namespace only: on any other registry the repository is
    # exactly what was written, or a push would land in a repository the user did not name.
    reference = parse_reference(text)
    assert reference.repository == "smollm2"
    assert reference.name == text


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("hf.co/Org/Repo:Q4_K_M", "hf.co/org/repo:Q4_K_M"),
        (
            "hf.co/bartowski/SmolLM2-135M-Instruct-GGUF",
            "hf.co/bartowski/smollm2-135m-instruct-gguf:latest",
        ),
        ("huggingface.co/Org/Repo:Q8_0", "hf.co/org/repo:Q8_0"),
        ("HF.CO/Org/Repo", "hf.co/org/repo:latest"),
    ],
)
def test_hugging_face_references_are_lowercased_but_keep_their_tag(text: str, name: str) -> None:
    reference = parse_reference(text)
    assert reference.registry == "hf.co"
    assert reference.is_huggingface
    assert reference.name == name
    assert reference.api_host == "hf.co"


def test_a_docker_hub_reference_is_not_hugging_face() -> None:
    assert not parse_reference("ai/smollm2").is_huggingface


def test_a_digest_without_a_tag_has_no_tag() -> None:
    reference = parse_reference(f"ai/smollm2@{DIGEST}")
    assert reference.tag is None
    assert reference.digest == DIGEST
    assert reference.name == f"ai/smollm2@{DIGEST}"


def test_a_digest_with_a_tag_keeps_both() -> None:
    reference = parse_reference(f"127.0.0.1:5000/team/llm:v1@{DIGEST}")
    assert (reference.registry, reference.repository) == ("127.0.0.1:5000", "team/llm")
    assert reference.tag == "v1"
    assert reference.digest == DIGEST
    assert reference.name == f"127.0.0.1:5000/team/llm:v1@{DIGEST}"


def test_with_tag_drops_the_digest() -> None:
    reference = parse_reference(f"ai/smollm2@{DIGEST}").with_tag("v9")
    assert reference == Reference("index.docker.io", "ai/smollm2", "v9")
    assert reference.name == "ai/smollm2:v9"


@pytest.mark.parametrize(
    ("text", "api_host"),
    [
        ("ai/smollm2", "registry-1.docker.io"),
        ("docker.io/ai/smollm2", "registry-1.docker.io"),
        ("127.0.0.1:5000/ai/smollm2", "127.0.0.1:5000"),
        ("registry.example.com/team/llm", "registry.example.com"),
    ],
)
def test_api_host_is_the_host_to_contact(text: str, api_host: str) -> None:
    assert parse_reference(text).api_host == api_host


@pytest.mark.parametrize(
    ("text", "insecure"),
    [
        ("localhost/team/llm", True),
        ("localhost:5000/team/llm", True),
        ("127.0.0.1:5000/team/llm", True),
        ("127.0.0.53/team/llm", True),
        ("[::1]:5000/team/llm", True),
        ("ai/smollm2", False),
        ("hf.co/org/repo", False),
        ("registry.example.com:5000/team/llm", False),
        ("10.0.0.1:5000/team/llm", False),
        ("localhost.example.com/team/llm", False),
        # A DNS name that merely starts like a loopback address is a remote host.
        ("127.example.com/team/llm", False),
        ("127.0.0.1.example.com/team/llm", False),
    ],
)
def test_only_loopback_registries_are_spoken_to_over_plain_http(text: str, insecure: bool) -> None:
    assert parse_reference(text).insecure is insecure


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        " ai/smollm2",
        "ai/smollm2 ",
        "ai/smoll m2",
        "ai/smollm2:v 1",
        "AI/smollm2",
        "ai/SmolLM2:v1",
        "127.0.0.1:5000/Team/llm",
        "ai/smollm2:",
        "ai/smollm2:-v1",
        "ai/smollm2:.v1",
        "ai/smollm2:v1!",
        "ai/smollm2:" + "v" * 129,
        # Tags are ASCII, as in every OCI registry.
        "ai/smollm2:vé",
        "ai/smollm2@",
        "ai/smollm2@sha256:abc",
        "ai/smollm2@sha256:" + "0123456789ABCDEF" * 4,
        "ai/smollm2@md5:0123456789abcdef0123456789abcdef",
        "ai/smollm2:v1@" + DIGEST + "x",
        "ai//smollm2",
        "ai/smollm2/",
        "/ai/smollm2",
        "ai/-smollm2",
        "hf.co/repo",
        "hf.co/org/repo/extra",
        "huggingface.co/only-one:Q4_0",
        "ai/" + "a" * 300,
    ],
)
def test_bad_references_are_invalid_arguments(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_reference(text)
    assert caught.value.reason == "INVALID_REFERENCE"
    assert [v.field for v in caught.value.violations] == ["model"]
    assert caught.value.metadata == {"reference": text}


def test_the_violation_names_the_field_the_caller_gave() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_reference("Bad/Ref", "target")
    assert caught.value.reason == "INVALID_REFERENCE"
    [violation] = caught.value.violations
    assert violation.field == "target"
    assert "Bad/Ref" in violation.description
