"""What every daemon says about itself (berth.common.v1.VersionInfo)."""

from __future__ import annotations

import functools
import platform
import socket
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from google.protobuf.timestamp_pb2 import Timestamp

from berth.api.common.v1.version_pb2 import VersionInfo

API_VERSION = "v1"


@functools.cache
def berth_version() -> str:
    try:
        return version("berth")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def version_info(component: str, start_time: datetime | None = None) -> VersionInfo:
    started = Timestamp()
    started.FromDatetime(start_time or datetime.now(UTC))
    return VersionInfo(
        component=component,
        version=berth_version(),
        api_version=API_VERSION,
        python_version=platform.python_version(),
        os=platform.system().lower(),
        arch=platform.machine(),
        hostname=socket.gethostname(),
        start_time=started,
    )
