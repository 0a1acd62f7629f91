"""An overlay network's datapath on one host: its bridge, its VXLAN device, and the
permanent forwarding and neighbour entries for the endpoints on other hosts.

The VXLAN device has learning off and ARP/ND proxy on: it answers a sandbox's neighbour
query from the entries programmed here, and sends each frame to the one host that has
the MAC. No all-zeros entry exists, so nothing is flooded to other hosts.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from ipaddress import ip_address
from typing import Any

from berth.network.adapters.links import Links, link_index, netlink_call
from berth.network.domain.model import IPInterface
from berth.network.domain.overlay import Forwarding, Neighbour, Peers

NUD_PERMANENT = 0x80


class Vxlan:
    def __init__(self, links: Links, *, underlay_address: str, port: int) -> None:
        self.links = links
        self.underlay_address = underlay_address
        self.port = port

    async def ensure(
        self,
        *,
        bridge: str,
        vxlan: str,
        vni: int,
        mtu: int,
        addresses: Sequence[IPInterface],
    ) -> None:
        """The bridge (with the gateway addresses) and the VXLAN device enslaved to it."""
        await self.links.ensure_bridge(bridge, mtu=mtu, addresses=addresses)
        ipr = self.links.ipr
        bridge_index = await link_index(ipr, bridge)
        index = await link_index(ipr, vxlan)
        if index is None:
            with contextlib.suppress(FileExistsError):
                await netlink_call(
                    ipr.link(
                        "add",
                        ifname=vxlan,
                        kind="vxlan",
                        vxlan_id=vni,
                        vxlan_local=self.underlay_address,
                        vxlan_port=self.port,
                        vxlan_learning=0,
                        vxlan_proxy=1,
                    )
                )
            index = await link_index(ipr, vxlan)
        await ipr.link("set", index=index, master=bridge_index, mtu=mtu, state="up")

    async def remove(self, *, bridge: str, vxlan: str) -> None:
        await self.links.delete_link(vxlan)
        await self.links.delete_link(bridge)

    async def set_peers(self, vxlan: str, wanted: Peers) -> None:
        """Make the device's permanent entries exactly `wanted`."""
        ipr = self.links.ipr
        index = await link_index(ipr, vxlan)
        if index is None:
            return
        forwarding, neighbours = await self._current(index)
        for entry in neighbours - wanted.neighbours:
            await _ignore_missing(
                ipr.neigh("del", dst=entry.address, lladdr=entry.mac_address, ifindex=index)
            )
        for entry in forwarding - wanted.forwarding:
            await _ignore_missing(
                ipr.fdb("del", ifindex=index, lladdr=entry.mac_address, dst=entry.underlay_address)
            )
        for entry in wanted.forwarding - forwarding:
            await ipr.fdb(
                "append",
                ifindex=index,
                lladdr=entry.mac_address,
                dst=entry.underlay_address,
                state=NUD_PERMANENT,
            )
        for entry in wanted.neighbours - neighbours:
            await ipr.neigh(
                "replace",
                dst=entry.address,
                lladdr=entry.mac_address,
                ifindex=index,
                state=NUD_PERMANENT,
                family=socket.AF_INET
                if ip_address(entry.address).version == 4
                else socket.AF_INET6,
            )

    async def _current(self, index: int) -> tuple[set[Forwarding], set[Neighbour]]:
        ipr = self.links.ipr
        forwarding = {
            Forwarding(m.get("NDA_LLADDR"), m.get("NDA_DST"))
            async for m in await ipr.fdb("dump", ifindex=index)
            if m["ifindex"] == index and m.get("NDA_DST") and m["state"] & NUD_PERMANENT
        }
        neighbours = {
            Neighbour(m.get("NDA_DST"), m.get("NDA_LLADDR"))
            async for m in await ipr.neigh("dump", ifindex=index)
            if m["ifindex"] == index and m["state"] & NUD_PERMANENT and m.get("NDA_LLADDR")
        }
        return forwarding, neighbours


async def _ignore_missing(request: Any) -> None:
    with contextlib.suppress(FileNotFoundError, OSError):
        await netlink_call(request)
