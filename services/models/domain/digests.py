"""Content digests: "sha256:<64 hex>", the names of every blob and manifest."""

from __future__ import annotations

import hashlib
import re

from berth.common.errors import BerthError, Code, FieldViolation, InvalidArgument

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class DigestMismatch(BerthError):
    """Content whose bytes do not hash to the digest it was announced with."""

    code = Code.DATA_LOSS
    default_reason = "DIGEST_MISMATCH"

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{what}: content does not match its digest (expected {expected}, got {actual});"
            " nothing was stored",
            metadata={"expected": expected, "actual": actual},
        )


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(text: str) -> bool:
    return _DIGEST.fullmatch(text) is not None


def check_digest(text: str, field: str) -> str:
    """`text` when it is a sha256 digest, else InvalidArgument on `field`."""
    if not is_digest(text):
        raise InvalidArgument([FieldViolation(field, f"{text!r} is not a sha256:<64 hex> digest")])
    return text


def hex_of(digest: str) -> str:
    return digest.removeprefix("sha256:")
