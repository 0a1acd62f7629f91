"""An overlay network's datapath on one host: its bridge, its VXLAN device, and the
permanent forwarding and neighbour entries for the endpoints on other hosts.

The VXLAN device has learning off and ARP/ND proxy on: it answers a sandbox's neighbour
query from the entries programmed here, and sends each frame to the one host that has
the MAC. No all-zeros entry exists, so nothing is flooded to other hosts.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable, Sequence
from ipaddress import ip_address
from typing import Any

import structlog

from berth.network.adapters.links import Links, link_index, netlink_call
from berth.network.domain.model import IPInterface
from berth.network.domain.overlay import Forwarding, Neighbour, Peers

log = structlog.get_logger("berth.network.overlay")

NUD_PERMANENT = 0x80
BROADCAST = b"\xff" * 6
ETH_P_ARP = b"\x08\x06"
# Ethernet, IPv4, 6-byte MACs, 4-byte addresses, operation 2 (reply).
ARP_REPLY_HEADER = b"\x00\x01\x08\x00\x06\x04\x00\x02"


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

    async def set_peers(self, vxlan: str, wanted: Peers, *, bridge: str) -> None:
        """Make the device's permanent entries exactly `wanted`; announce the new
        neighbours to the sandboxes on `bridge`."""
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
        added = wanted.neighbours - neighbours
        for entry in added:
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
        await self._announce(bridge, added)

    async def _announce(self, bridge: str, added: Iterable[Neighbour]) -> None:
        """Answer, unasked, for each new IPv4 neighbour on the bridge. A sandbox that asked
        for the address a moment before this host knew it holds an unanswered entry, and
        the kernel would ask again only after a second; this reply completes that entry at
        once (an entry nobody asked for is not created: arp_accept is off)."""
        ipv4 = [n for n in added if ip_address(n.address).version == 4]
        if not ipv4:
            return
        index = await link_index(self.links.ipr, bridge)
        if index is None:
            return
        (link,) = await self.links.ipr.link("get", index=index)
        source = link.get("IFLA_ADDRESS")
        try:
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
                raw.bind((bridge, 0))
                for neighbour in ipv4:
                    raw.send(arp_reply(source, neighbour))
        except OSError as error:  # only a delay: the sandbox's kernel asks again
            log.warning("cannot announce overlay neighbours", bridge=bridge, error=str(error))

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


def arp_reply(source_mac: str, neighbour: Neighbour) -> bytes:
    """A broadcast ARP reply saying `neighbour.address` is at `neighbour.mac_address`,
    sent from the bridge's own MAC (a frame from the remote MAC would teach the bridge
    that the MAC is local)."""
    mac = bytes.fromhex(neighbour.mac_address.replace(":", ""))
    address = ip_address(neighbour.address).packed
    ethernet = BROADCAST + bytes.fromhex(source_mac.replace(":", "")) + ETH_P_ARP
    arp = ARP_REPLY_HEADER + mac + address + BROADCAST + address
    return ethernet + arp
