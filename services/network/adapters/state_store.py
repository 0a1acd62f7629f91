"""The agent's state on disk: a JSON file per network and per sandbox, and the IPAM's.

A change writes only what it touched (a create stays as quick at the 500th sandbox as at
the 10th), each file atomically. The addresses in use are recorded only with the
endpoints that hold them and marked in the IPAM again on load; the IPAM file keeps the
subnets, reservations and allocation cursors, so an address is never handed out twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from berth.common.jsonfile import read_json, write_json
from berth.network.domain.ipam import Ipam
from berth.network.domain.model import Network, Sandbox
from berth.network.domain.state import NetworkState, decode_network, decode_sandbox, encode


class StateStore:
    def __init__(self, folder: Path) -> None:
        self.networks = folder / "networks"
        self.sandboxes = folder / "sandboxes"
        self.ipam_file = folder / "ipam.json"
        self._ipam_written: dict[str, Any] | None = None

    def load(self) -> NetworkState:
        ipam_data = read_json(self.ipam_file, None)
        state = NetworkState(
            networks=[decode_network(read_json(p, None)) for p in _files(self.networks)],
            sandboxes=[decode_sandbox(read_json(p, None)) for p in _files(self.sandboxes)],
            ipam=Ipam.from_dict(ipam_data) if ipam_data else Ipam(),
        )
        state.reconcile_ipam()
        return state

    def save(self, item: Network | Sandbox) -> None:
        write_json(self._path(item), encode(item))

    def forget(self, item: Network | Sandbox) -> None:
        self._path(item).unlink(missing_ok=True)

    def save_ipam(self, ipam: Ipam) -> None:
        # Subnets and cursors only: the addresses in use are in the sandboxes' files.
        data = ipam.to_dict(addresses=False)
        if data != self._ipam_written:
            write_json(self.ipam_file, data)
            self._ipam_written = data

    def _path(self, item: Network | Sandbox) -> Path:
        folder = self.networks if isinstance(item, Network) else self.sandboxes
        return folder / f"{item.id}.json"


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json")) if folder.exists() else []
