"""Bridges and veth endpoints on the kernel, through rtnetlink (pyroute2).

`Links` works in one namespace: the agent's own (netns=None) or a named one (tests make a
"host" namespace). Sandboxes are other namespaces, named or given by path, that an
endpoint's veth peer is moved into and configured in.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_interface, ip_network
from pathlib import Path
from types import TracebackType
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from berth.network.adapters.netns import netlink_socket_in, netns_path, write_sysctls
from berth.network.domain.model import IPInterface, IPNetwork

IFA_F_NODAD = 0x02
RT_TABLE_LOCAL = 255
# local, broadcast, anycast and multicast routes name addresses, not networks.
NON_NETWORK_ROUTE_TYPES = frozenset({2, 3, 4, 5})
FORWARDING_V4 = {"net.ipv4.ip_forward": "1"}
FORWARDING_V6 = {"net.ipv6.conf.all.forwarding": "1", "net.ipv6.conf.default.forwarding": "1"}


class LinkError(RuntimeError):
    """A link is missing, or is not what it must be (a bridge)."""


class Links:
    """Links of one network namespace; open() before use, or `async with Links(...)`."""

    def __init__(self, netns: str | None = None) -> None:
        self._netns = netns
        self._ipr: AsyncIPRoute | None = None

    async def open(self) -> None:
        if self._ipr is not None:
            return
        ipr = await _iproute(None if self._netns is None else netns_path(self._netns))
        try:
            await ipr.setup_endpoint()  # fails now, not later, when the namespace is missing
        except BaseException:
            ipr.close()
            raise
        self._ipr = ipr

    async def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def __aenter__(self) -> Links:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def ipr(self) -> AsyncIPRoute:
        if self._ipr is None:
            raise RuntimeError("Links is not open")
        return self._ipr

    # Bridges and links of this namespace

    async def ensure_bridge(self, name: str, *, mtu: int, addresses: Sequence[IPInterface]) -> None:
        """Creates the bridge if missing; sets its MTU and exactly these addresses; brings it up.

        IPv6 link-local addresses the kernel gave the bridge are kept unless listed.
        """
        index = await link_index(self.ipr, name)
        if index is None:
            with contextlib.suppress(FileExistsError):
                await netlink_call(self.ipr.link("add", ifname=name, kind="bridge"))
            index = await self._require(name)
        await self._require_bridge(index, name)
        await self.ipr.link("set", index=index, mtu=mtu)
        await _sync_addresses(self.ipr, index, addresses)
        await self.ipr.link("set", index=index, state="up")

    async def delete_link(self, name: str) -> None:
        """Deletes the link (both ends of a veth pair); nothing happens if it is missing."""
        index = await link_index(self.ipr, name)
        if index is None:
            return
        with contextlib.suppress(FileNotFoundError):
            await netlink_call(self.ipr.link("del", index=index))

    async def link_names(self) -> set[str]:
        return {link.get("ifname") async for link in await self.ipr.link("dump")}

    async def set_port_isolated(self, host_ifname: str, isolated: bool) -> None:
        """Isolated bridge ports reach the bridge and other ports, not each other."""
        index = await self._require(host_ifname)
        await self.ipr.brport("set", index=index, isolated=int(isolated))

    async def enable_forwarding(self, ipv6: bool) -> None:
        sysctls = {**FORWARDING_V4, **(FORWARDING_V6 if ipv6 else {})}
        own = f"/proc/{os.getpid()}/ns/net"
        await write_sysctls(own if self._netns is None else self._netns, sysctls)

    async def host_networks(self) -> list[IPNetwork]:
        """Networks this namespace reaches: route destinations and address networks.

        Default routes and link-local, loopback and multicast networks are left out.
        """
        networks = {net async for net in _route_networks(self.ipr)}
        networks |= {net async for net in _address_networks(self.ipr)}
        kept = [net for net in networks if not _special(net)]
        return sorted(kept, key=lambda net: (net.version, net.network_address, net.prefixlen))

    async def source_address_towards(self, host: str) -> str:
        """The address this namespace sends from towards `host` (a name or address)."""
        destination = await asyncio.to_thread(socket.gethostbyname, host)
        for route in await self.ipr.route("get", dst=destination):
            source = route.get("RTA_PREFSRC")
            if source:
                return str(source)
        raise LinkError(f"no route with a source address towards {host}")

    # Endpoints: veth pairs from a bridge here into a sandbox namespace

    async def create_endpoint(
        self,
        *,
        bridge: str,
        host_ifname: str,
        netns: str | Path,
        ifname: str,
        mac: str,
        mtu: int,
        addresses: Sequence[IPInterface],
        gateway4: IPv4Address | None,
        gateway6: IPv6Address | None,
        metric: int,
        sysctls: Mapping[str, str],
    ) -> None:
        """Joins the sandbox namespace to the bridge with a veth pair, configured inside.

        On failure the pair is deleted (nothing is left behind) and the error propagates,
        with a note saying which step failed.
        """
        bridge_index = await self._require(bridge)
        sandbox = netns_path(netns)
        if not sandbox.exists():
            raise LinkError(f"network namespace {str(netns)!r} does not exist ({sandbox})")
        # The peer is born inside the sandbox with its final name: moving it there after
        # creation costs the kernel about ten times as long. Outside the try: when
        # host_ifname (or ifname in the sandbox) exists already, it is not ours to delete.
        await self._add_veth(host_ifname, ifname, sandbox)
        peer = ifname
        try:
            await _step(
                f"attaching {host_ifname} to {bridge}", self._attach(host_ifname, bridge_index, mtu)
            )
            await _step(
                f"configuring {ifname} in {sandbox}",
                _configure_sandbox(
                    sandbox,
                    peer,
                    ifname=ifname,
                    mac=mac,
                    mtu=mtu,
                    addresses=addresses,
                    gateway4=gateway4,
                    gateway6=gateway6,
                    metric=metric,
                ),
            )
            await _step(f"setting sysctls in {sandbox}", write_sysctls(sandbox, sysctls))
        except BaseException as error:
            await self._discard(host_ifname, error)
            raise

    async def remove_endpoint(self, host_ifname: str) -> None:
        """Deletes the veth pair; nothing happens if it is gone already."""
        await self.delete_link(host_ifname)

    async def _discard(self, host_ifname: str, error: BaseException) -> None:
        try:
            await self.delete_link(host_ifname)
        except Exception as cleanup_error:
            error.add_note(f"and deleting {host_ifname} failed too: {cleanup_error!r}")

    async def _attach(self, host_ifname: str, bridge_index: int, mtu: int) -> None:
        index = await self._require(host_ifname)
        await self.ipr.link("set", index=index, mtu=mtu)
        await self.ipr.link("set", index=index, master=bridge_index)
        await self.ipr.link("set", index=index, state="up")

    async def _add_veth(self, host_ifname: str, ifname: str, sandbox: Path) -> None:
        fd = os.open(sandbox, os.O_RDONLY | os.O_CLOEXEC)
        try:
            peer = {"ifname": ifname, "net_ns_fd": fd}
            await netlink_call(self.ipr.link("add", ifname=host_ifname, kind="veth", peer=peer))
        finally:
            os.close(fd)

    async def _require(self, name: str) -> int:
        index = await link_index(self.ipr, name)
        if index is None:
            where = "the agent's namespace" if self._netns is None else self._netns
            raise LinkError(f"no link named {name!r} in {where}")
        return index

    async def _require_bridge(self, index: int, name: str) -> None:
        (link,) = await self.ipr.link("get", index=index)
        kind = link.get(("linkinfo", "kind"))
        if kind != "bridge":
            raise LinkError(f"link {name!r} exists and is a {kind or 'device'}, not a bridge")


async def _configure_sandbox(
    sandbox: Path,
    peer: str,
    *,
    ifname: str,
    mac: str,
    mtu: int,
    addresses: Sequence[IPInterface],
    gateway4: IPv4Address | None,
    gateway6: IPv6Address | None,
    metric: int,
) -> None:
    ipr = await _iproute(sandbox)
    try:
        index = await link_index(ipr, peer)
        if index is None:
            raise LinkError(f"the veth peer {peer} did not arrive in {sandbox}")
        await netlink_call(ipr.link("set", index=index, ifname=ifname))
        await ipr.link("set", index=index, address=mac, mtu=mtu)
        await ipr.link("set", index=index, state="up")
        loopback = await link_index(ipr, "lo")
        if loopback is not None:
            await ipr.link("set", index=loopback, state="up")
        for address in addresses:
            await _add_address(ipr, index, address)
        if gateway4 is not None:
            await _add_default_route(ipr, index, str(gateway4), socket.AF_INET, metric)
        if gateway6 is not None:
            await _add_default_route(ipr, index, str(gateway6), socket.AF_INET6, metric)
    finally:
        ipr.close()


async def _add_default_route(
    ipr: AsyncIPRoute, index: int, gateway: str, family: int, metric: int
) -> None:
    any_address = "0.0.0.0" if family == socket.AF_INET else "::"
    await ipr.route(
        "add",
        family=family,
        dst=any_address,
        dst_len=0,
        gateway=gateway,
        oif=index,
        priority=metric,
    )


# Addresses


async def _sync_addresses(ipr: AsyncIPRoute, index: int, wanted: Sequence[IPInterface]) -> None:
    for address in await _addresses(ipr, index) - set(wanted):
        if address.version == 6 and address.is_link_local:
            continue
        # Gone already when it was a secondary of a primary deleted just before.
        await _call_errno(
            errno.EADDRNOTAVAIL,
            ipr.addr(
                "del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
            ),
        )
    for address in set(wanted) - await _addresses(ipr, index):
        await _add_address(ipr, index, address)


async def _addresses(ipr: AsyncIPRoute, index: int) -> set[IPInterface]:
    return {_interface(msg) async for msg in await ipr.addr("dump", index=index)}


async def _add_address(ipr: AsyncIPRoute, index: int, address: IPInterface) -> None:
    # Addresses come from IPAM, so duplicate address detection only delays them.
    flags = {"flags": IFA_F_NODAD} if address.version == 6 else {}
    await ipr.addr(
        "add",
        index=index,
        address=str(address.ip),
        prefixlen=address.network.prefixlen,
        **flags,
    )


def _interface(msg: Any) -> IPInterface:
    address = msg.get("local") or msg.get("address")
    return ip_interface(f"{address}/{msg['prefixlen']}")


# host_networks


async def _route_networks(ipr: AsyncIPRoute) -> AsyncIterator[IPNetwork]:
    async for route in await ipr.route("dump"):
        if route.get("table") == RT_TABLE_LOCAL or route["type"] in NON_NETWORK_ROUTE_TYPES:
            continue
        if route["dst_len"] == 0 or route.get("dst") is None:
            continue
        yield ip_network(f"{route.get('dst')}/{route['dst_len']}", strict=False)


async def _address_networks(ipr: AsyncIPRoute) -> AsyncIterator[IPNetwork]:
    async for msg in await ipr.addr("dump"):
        yield _interface(msg).network


def _special(network: IPNetwork) -> bool:
    return network.is_link_local or network.is_loopback or network.is_multicast


# pyroute2 helpers


async def _iproute(netns: Path | None) -> AsyncIPRoute:
    if netns is None:
        return AsyncIPRoute(groups=0, ext_ack=True)
    # A missing namespace raises FileNotFoundError when the thread opens it.
    # Not AsyncIPRoute(netns=...): pyroute2 forks for it, which gRPC does not survive.
    return AsyncIPRoute(fileno=await netlink_socket_in(netns), groups=0, ext_ack=True)


async def link_index(ipr: AsyncIPRoute, name: str) -> int | None:
    indices = await ipr.link_lookup(ifname=name)
    return indices[0] if indices else None


async def netlink_call(request: Awaitable[Any]) -> Any:
    """Awaits a netlink request; EEXIST and ENODEV become FileExistsError, FileNotFoundError."""
    try:
        return await request
    except NetlinkError as error:
        if error.code == errno.EEXIST:
            raise FileExistsError(error.code, str(error)) from error
        if error.code == errno.ENODEV:
            raise FileNotFoundError(error.code, str(error)) from error
        raise


async def _call_errno(ignored: int, request: Awaitable[Any]) -> Any:
    try:
        return await request
    except NetlinkError as error:
        if error.code != ignored:
            raise
        return None


async def _step(what: str, work: Awaitable[Any]) -> None:
    try:
        await work
    except Exception as error:
        error.add_note(f"while {what}")
        raise
