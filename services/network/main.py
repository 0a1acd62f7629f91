"""berth-networkd: the network agent of one host."""

from __future__ import annotations

import resource
from collections.abc import Sequence

from pyroute2 import netns

from berth.api.network.v1 import (
    event_service_pb2_grpc,
    network_service_pb2_grpc,
    sandbox_service_pb2_grpc,
    system_service_pb2_grpc,
)
from berth.common import logging
from berth.common.server import Daemon, Lifecycle, registration, run_daemon
from berth.network.adapters.cluster_store import ClusterStore
from berth.network.adapters.links import Links
from berth.network.adapters.nftables import Nftables
from berth.network.adapters.resolver_files import ETC_NETNS, HostResolvConf, SandboxFiles
from berth.network.adapters.vxlan import Vxlan
from berth.network.agent import NetworkAgent
from berth.network.dns.embedded import EmbeddedDns
from berth.network.domain.events import EventLog
from berth.network.overlay.driver import OverlayDriver
from berth.network.overlay.link import ClusterLink, Timing
from berth.network.settings import NetworkdSettings
from berth.network.transport.events import EventServicer
from berth.network.transport.networks import NetworkServicer
from berth.network.transport.sandboxes import SandboxServicer
from berth.network.transport.system import SystemServicer


def build_agent(settings: NetworkdSettings) -> Daemon:
    lifecycle = Lifecycle()
    events = EventLog()
    events.bind_loop()
    links = Links()
    dns = EmbeddedDns(
        host_resolv_conf=HostResolvConf(settings.resolv_conf),
        files=SandboxFiles(ETC_NETNS),
        upstream_timeout=settings.dns_upstream_timeout,
        upstream_limit=settings.dns_upstream_limit,
    )
    overlay = _overlay_driver(settings, links)
    agent = NetworkAgent(
        state_dir=settings.state_dir,
        links=links,
        nftables=Nftables(),
        events=events,
        dns=dns,
        name_prefix=settings.name_prefix,
        default_bridge_name=settings.default_bridge_name,
        overlay=overlay,
    )
    on_stop = [links.close, dns.close]
    if overlay is not None:
        overlay.link.on_change = agent.on_cluster_change
        overlay.link.on_resync = agent.on_cluster_resync
        on_stop.insert(0, overlay.link.stop)

    async def start() -> None:
        await links.open()
        await agent.start()
        if overlay is not None:
            if not overlay.vxlan.underlay_address:
                overlay.vxlan.underlay_address = await links.source_address_towards(
                    overlay.store.host()
                )
            overlay.link.underlay_address = overlay.vxlan.underlay_address
            overlay.link.start()

    services = [
        registration(
            system_service_pb2_grpc, "SystemService", SystemServicer(agent, settings, lifecycle)
        ),
        registration(event_service_pb2_grpc, "EventService", EventServicer(events, lifecycle)),
        registration(network_service_pb2_grpc, "NetworkService", NetworkServicer(agent)),
        registration(sandbox_service_pb2_grpc, "SandboxService", SandboxServicer(agent)),
    ]
    return Daemon(
        "berth-networkd",
        settings,
        services,
        lifecycle=lifecycle,
        on_start=[start],
        on_stop=on_stop,
    )


def _overlay_driver(settings: NetworkdSettings, links: Links) -> OverlayDriver | None:
    """The cluster side, when the agent is given a cluster store."""
    if not settings.redis_url:
        return None
    store = ClusterStore(settings.redis_url)
    underlay = settings.underlay_address or ""
    link = ClusterLink(
        store,
        host_name=settings.host_name,
        underlay_address=underlay,
        agent_address=settings.advertise_address,
        timing=Timing(
            heartbeat_interval=settings.heartbeat_interval,
            host_ttl=settings.host_ttl,
            resync_interval=settings.resync_interval,
        ),
    )
    vxlan = Vxlan(links, underlay_address=underlay, port=settings.vxlan_port)
    return OverlayDriver(store=store, link=link, vxlan=vxlan, host_name=settings.host_name)


def main(argv: Sequence[str] | None = None) -> None:
    settings = NetworkdSettings.from_args(argv)
    logging.configure(level=settings.log_level, fmt=settings.log_format)
    _raise_open_files_limit()
    if settings.netns:
        # Before any thread exists: every thread grpc starts later inherits the namespace.
        netns.setns(settings.netns, flags=0)
    run_daemon(lambda: build_agent(settings))


def _raise_open_files_limit() -> None:
    """The embedded DNS server holds two sockets per sandbox: allow as many files as the
    hard limit does, not the usual soft 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    main()
