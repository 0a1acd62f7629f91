"""Which GGUF of a Hugging Face repository `berth model pull hf.co/<org>/<repo>[:<tag>]` takes."""

from __future__ import annotations

import pytest

from berth.common.errors import InvalidArgument, NotFound
from berth.models.domain.huggingface import (
    HubFile,
    choose_gguf,
    hub_repo_id,
    quantization_of,
)
from berth.models.domain.reference import parse_reference


def files(*paths: str) -> list[HubFile]:
    return [HubFile(path, 1000 + i, f"{i:064x}") for i, path in enumerate(paths)]


def chosen(listing: list[HubFile], tag: str | None) -> list[str]:
    return [f.path for f in choose_gguf(listing, tag)]


# What bartowski/Llama-3.2-1B-Instruct-GGUF holds (Docker's example), in no particular order.
LLAMA = files(
    "README.md",
    "Llama-3.2-1B-Instruct-Q8_0.gguf",
    "Llama-3.2-1B-Instruct-Q4_K_S.gguf",
    "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
    "Llama-3.2-1B-Instruct-IQ4_XS.gguf",
    "Llama-3.2-1B-Instruct-f16.gguf",
    "Llama-3.2-1B-Instruct.imatrix",
)
SMOLLM2 = files(
    "SmolLM2-135M-Instruct.Q8_0.gguf",
    "README.md",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "config.json",
)


@pytest.mark.parametrize("tag", [None, "latest", "main", ""])
def test_no_tag_takes_q4_k_m(tag: str | None) -> None:
    assert chosen(LLAMA, tag) == ["Llama-3.2-1B-Instruct-Q4_K_M.gguf"]


def test_without_q4_k_m_the_first_gguf_of_the_files_view_is_taken() -> None:
    assert chosen(SMOLLM2, None) == ["SmolLM2-135M-Instruct.Q4_1.gguf"]


@pytest.mark.parametrize(
    ("tag", "path"),
    [
        ("Q4_K_S", "Llama-3.2-1B-Instruct-Q4_K_S.gguf"),
        ("q4_k_s", "Llama-3.2-1B-Instruct-Q4_K_S.gguf"),
        ("Q8_0", "Llama-3.2-1B-Instruct-Q8_0.gguf"),
        ("iq4_xs", "Llama-3.2-1B-Instruct-IQ4_XS.gguf"),
        ("F16", "Llama-3.2-1B-Instruct-f16.gguf"),
    ],
)
def test_a_tag_picks_that_quantization_whatever_its_case(tag: str, path: str) -> None:
    assert chosen(LLAMA, tag) == [path]


def test_a_dotted_quantization_name_is_found() -> None:
    assert chosen(SMOLLM2, "q8_0") == ["SmolLM2-135M-Instruct.Q8_0.gguf"]


def test_a_quantization_is_not_the_prefix_of_a_longer_one() -> None:
    with pytest.raises(NotFound):
        choose_gguf(LLAMA, "Q4_K")


def test_a_missing_quantization_is_not_found_and_the_error_lists_those_there_are() -> None:
    with pytest.raises(NotFound) as caught:
        choose_gguf(SMOLLM2, "Q5_K_M", repository="huggingfacetb/smollm2-135m-instruct-gguf")
    error = caught.value
    assert error.reason == "MODEL_NOT_FOUND"
    assert "Q5_K_M" in error.message
    assert "Q4_1, Q8_0" in error.message
    assert "hf.co/huggingfacetb/smollm2-135m-instruct-gguf" in error.message
    assert error.metadata["available"] == "Q4_1, Q8_0"
    assert error.metadata["quantization"] == "Q5_K_M"


def test_a_repository_without_gguf_is_not_found() -> None:
    with pytest.raises(NotFound) as caught:
        choose_gguf(files("README.md", "model.safetensors", "config.json"), None)
    assert caught.value.reason == "MODEL_NOT_FOUND"
    assert "no GGUF" in caught.value.message


def test_a_split_model_comes_as_all_its_shards_in_order() -> None:
    listing = files(
        "Qwen3-Q8_0.gguf",
        "Q4_K_M/Qwen3-Q4_K_M-00003-of-00003.gguf",
        "Q4_K_M/Qwen3-Q4_K_M-00001-of-00003.gguf",
        "Q4_K_M/Qwen3-Q4_K_M-00002-of-00003.gguf",
    )
    assert chosen(listing, None) == [
        "Q4_K_M/Qwen3-Q4_K_M-00001-of-00003.gguf",
        "Q4_K_M/Qwen3-Q4_K_M-00002-of-00003.gguf",
        "Q4_K_M/Qwen3-Q4_K_M-00003-of-00003.gguf",
    ]
    assert chosen(listing, "Q8_0") == ["Qwen3-Q8_0.gguf"]


def test_a_quantization_folder_names_the_shards_inside_it() -> None:
    listing = files(
        "Q8_0/model-00002-of-00002.gguf",
        "Q8_0/model-00001-of-00002.gguf",
        "Q2_K/model-00001-of-00002.gguf",
        "Q2_K/model-00002-of-00002.gguf",
    )
    assert chosen(listing, "q8_0") == [
        "Q8_0/model-00001-of-00002.gguf",
        "Q8_0/model-00002-of-00002.gguf",
    ]
    # No Q4_K_M: the first in path order, with its sibling shards.
    assert chosen(listing, None) == [
        "Q2_K/model-00001-of-00002.gguf",
        "Q2_K/model-00002-of-00002.gguf",
    ]


def test_a_split_model_missing_a_shard_is_not_taken() -> None:
    listing = files("model-Q4_K_M-00001-of-00003.gguf", "model-Q4_K_M-00003-of-00003.gguf")
    with pytest.raises(NotFound) as caught:
        choose_gguf(listing, None)
    assert "2 of the 3 parts" in caught.value.message


def test_a_multimodal_projector_is_never_the_model() -> None:
    listing = files("model-Q8_0.gguf", "mmproj-model-f16.gguf", "model-F16.gguf")
    assert chosen(listing, None) == ["model-F16.gguf"]  # though mmproj-... comes first
    assert chosen(listing, "f16") == ["model-F16.gguf"]
    with pytest.raises(NotFound):
        choose_gguf(files("mmproj-model-f16.gguf"), None)


@pytest.mark.parametrize(
    ("path", "quantization"),
    [
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("gemma-3-1b-it-q4_0.gguf", "Q4_0"),
        ("Qwen3-30B-A3B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
        ("Q4_K_M/Kimi-K2-Instruct-Q4_K_M-00001-of-00013.gguf", "Q4_K_M"),
        ("Q6_K/model-00001-of-00002.gguf", "Q6_K"),
        ("Meta-Llama-3-8B-Instruct-IQ2_XXS.gguf", "IQ2_XXS"),
        ("Qwen2.5-7B-Instruct-bf16.gguf", "BF16"),
        ("model.gguf", None),
    ],
)
def test_the_quantization_a_file_name_carries(path: str, quantization: str | None) -> None:
    assert quantization_of(path) == quantization


def test_the_repository_id_is_the_lower_cased_name_of_the_reference() -> None:
    reference = parse_reference("hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1")
    assert hub_repo_id(reference) == "huggingfacetb/smollm2-135m-instruct-gguf"
    assert reference.tag == "Q4_1"
    assert hub_repo_id(parse_reference("huggingface.co/bartowski/x-GGUF")) == "bartowski/x-gguf"


def test_a_registry_reference_has_no_repository_id() -> None:
    with pytest.raises(InvalidArgument) as caught:
        hub_repo_id(parse_reference("ai/smollm2"))
    assert caught.value.reason == "INVALID_REFERENCE"
