"""Docker's model config: its display strings, the config blob's bytes, reading it back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from berth.common.errors import FailedPrecondition
from berth.models.domain.model_config import (
    ModelConfig,
    config_blob,
    format_created,
    format_parameters,
    format_safetensors_parameters,
    format_safetensors_size,
    format_size,
    parse_config_blob,
)

CREATED = datetime(2025, 4, 1, 12, 0, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (134515008, "134.52M"),
        (183, "183"),
        (0, "0"),
        (1500, "1.50K"),
        (8_000_000_000, "8B"),
        (7_241_732_096, "7.24B"),
        (2_000_000_000_000, "2T"),
    ],
)
def test_gguf_parameters_read_as_docker_shows_them(count: int, text: str) -> None:
    assert format_parameters(count) == text


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [
        (96576736, "92.10MiB"),
        (0, "0B"),
        (512, "512B"),
        (2**30, "1GiB"),
        (4_920_000_000, "4.58GiB"),
        # gguf-parser-go tries decimal units between the binary ones.
        (1_020_000, "1.02MB"),
    ],
)
def test_gguf_sizes_read_as_docker_shows_them(num_bytes: int, text: str) -> None:
    assert format_size(num_bytes) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [(183, "183.00"), (134515008, "134.52M"), (8_000_000_000, "8.00B")],
)
def test_safetensors_parameters_keep_two_decimals(count: int, text: str) -> None:
    assert format_safetensors_parameters(count) == text


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [(0, "n/a"), (999, "999.00B"), (1500, "1.50kB"), (269_060_000, "269.06MB")],
)
def test_safetensors_sizes_use_powers_of_1000(num_bytes: int, text: str) -> None:
    assert format_safetensors_size(num_bytes) == text


def _smollm2() -> ModelConfig:
    return ModelConfig(
        format="gguf",
        quantization="Q4_1",
        parameters="134.52M",
        architecture="llama",
        size="92.10MiB",
        gguf={"llama.context_length": "8192", "general.architecture": "llama", "t": "<a&b>"},
    )


def test_the_config_blob_is_the_bytes_dockers_encoder_writes() -> None:
    body = config_blob(_smollm2(), CREATED, ["sha256:" + "a" * 64])
    assert body == (
        b'{"config":{"format":"gguf","quantization":"Q4_1","parameters":"134.52M",'
        b'"architecture":"llama","size":"92.10MiB","gguf":{"general.architecture":"llama",'
        b'"llama.context_length":"8192","t":"\\u003ca\\u0026b\\u003e"}},'
        b'"descriptor":{"created":"2025-04-01T12:00:00.123Z"},'
        b'"rootfs":{"type":"rootfs","diff_ids":["sha256:' + b"a" * 64 + b'"]}}'
    )
    assert config_blob(_smollm2(), CREATED, ["sha256:" + "a" * 64]) == body


def test_empty_fields_are_left_out_and_context_size_comes_last() -> None:
    config = ModelConfig(format="safetensors").with_context_size(2048)
    assert config.to_json() == {"format": "safetensors", "context_size": 2048}
    assert list(json.loads(config_blob(config, CREATED, []))["config"]) == [
        "format",
        "context_size",
    ]


def test_a_config_blob_reads_back_as_written() -> None:
    config = _smollm2().with_context_size(4096)
    parsed, created = parse_config_blob(config_blob(config, CREATED, []))
    assert parsed == config
    assert created == CREATED


def test_dockers_config_blob_is_read_and_unknown_keys_ignored() -> None:
    body = json.dumps(
        {
            "config": {
                "format": "gguf",
                "quantization": "Q4_K_M",
                "parameters": "361.82M",
                "architecture": "llama",
                "size": "256.35MiB",
                "gguf": {"llama.context_length": "8192"},
                "diffusers": {"x": "y"},
                "context_size": 2048,
                "future": [1, 2],
            },
            "descriptor": {"created": "2025-05-07T09:32:06.123456789+02:00"},
            "rootfs": {"type": "rootfs", "diff_ids": []},
        }
    ).encode()
    config, created = parse_config_blob(body)
    assert config.quantization == "Q4_K_M"
    assert config.context_size == 2048
    assert config.native_context_length == 8192
    assert created == datetime(2025, 5, 7, 7, 32, 6, 123456, tzinfo=UTC)


def test_a_blob_without_created_time_reads_with_none() -> None:
    config, created = parse_config_blob(b'{"config": {"format": "gguf"}}')
    assert config == ModelConfig(format="gguf")
    assert created is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"descriptor": {}}',
        b'{"config": {"format": 3}}',
        b'{"config": {"format": "gguf", "gguf": {"a": 1}}}',
        b'{"config": {"format": "gguf", "context_size": "4096"}}',
        b'{"config": {"format": "gguf", "context_size": true}}',
    ],
)
def test_a_blob_that_is_not_a_model_config_is_unsupported(body: bytes) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        parse_config_blob(body)
    assert caught.value.reason == "UNSUPPORTED_FORMAT"


def test_native_context_length_comes_from_the_gguf_metadata() -> None:
    assert _smollm2().native_context_length == 8192
    assert ModelConfig(format="safetensors").native_context_length is None


def test_created_times_are_written_as_go_writes_them() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert format_created(datetime(2025, 1, 2, 3, 4, 5, tzinfo=plus_two)) == (
        "2025-01-02T03:04:05+02:00"
    )
    assert format_created(datetime(2025, 1, 2, 3, 4, 5, 500000)) == "2025-01-02T03:04:05.5Z"
