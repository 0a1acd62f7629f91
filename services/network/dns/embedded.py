"""The embedded DNS server kept in step with the agent's state: after every change the
name table is rebuilt, sockets are opened in sandboxes that joined a network with
embedded DNS (and closed in those that left), and the resolver files of the sandboxes the
change touched are rewritten."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import structlog

from berth.network.adapters.resolver_files import HostResolvConf, SandboxFiles
from berth.network.dns.listeners import DnsListeners
from berth.network.dns.resolver import Resolver
from berth.network.dns.upstream import Upstream
from berth.network.domain.model import Sandbox, SandboxState
from berth.network.domain.names import (
    NameTable,
    legacy_link_hosts,
    needs_dns,
    own_addresses,
)
from berth.network.domain.resolvconf import sandbox_hosts, sandbox_resolv_conf
from berth.network.domain.state import NetworkState

log = structlog.get_logger("berth.network.dns")


class EmbeddedDns:
    def __init__(
        self,
        *,
        host_resolv_conf: HostResolvConf,
        files: SandboxFiles,
        upstream_timeout: float,
        upstream_limit: int,
    ) -> None:
        self.host = host_resolv_conf
        self.files = files
        self.upstream = Upstream(timeout=upstream_timeout, limit=upstream_limit)
        self.resolver = Resolver(
            self.upstream.forward, lambda: self.host.read().nameservers, self.names
        )
        self.listeners = DnsListeners(self.resolver)
        self._state = NetworkState()
        self._table: NameTable | None = None

    def names(self) -> NameTable:
        """The name table of the state as it is now, built at the first query after a
        change (a burst of changes costs one build, not one each)."""
        if self._table is None:
            self._table = NameTable.build(
                self._state.networks.values(),
                self._state.sandboxes.values(),
                (e for remote in self._state.remote.values() for e in remote),
            )
        return self._table

    def resolv_conf_path(self, sandbox: Sandbox) -> Path:
        return self.files.folder(Path(sandbox.netns).name) / "resolv.conf"

    async def sync(self, state: NetworkState, touched: Iterable[Sandbox] = ()) -> None:
        """After a change to `state` that concerned the `touched` sandboxes."""
        self._state, self._table = state, None
        serving = self.listeners.serving()
        rewrite = {s.id: s for s in touched if s.id in state.sandboxes}
        for sandbox in rewrite.values():
            wanted = needs_dns(sandbox, state.networks)
            if wanted and sandbox.id not in serving:
                await self._listen(sandbox)
            elif not wanted and sandbox.id in serving:
                self.listeners.close(sandbox.id)
        rewrite.update((s.id, s) for s in state.sandboxes.values() if _has_links(s))
        running = {s.name: s for s in state.sandboxes.values() if s.state is SandboxState.RUNNING}
        for sandbox in rewrite.values():
            try:
                embedded = needs_dns(sandbox, state.networks)
                self._write_files(sandbox, state, running, embedded=embedded)
            except OSError as error:
                log.warning(
                    "cannot write the sandbox's resolver files",
                    sandbox=sandbox.name,
                    error=str(error),
                )

    async def _listen(self, sandbox: Sandbox) -> None:
        try:
            await self.listeners.open(sandbox.id, Path(sandbox.netns))
        except OSError as error:
            log.warning(
                "embedded dns cannot listen in sandbox", sandbox=sandbox.name, error=str(error)
            )

    def _write_files(
        self,
        sandbox: Sandbox,
        state: NetworkState,
        running: dict[str, Sandbox],
        *,
        embedded: bool,
    ) -> None:
        if sandbox.attached:
            return  # a namespace someone else made: its resolver files are theirs
        name = Path(sandbox.netns).name
        resolv_conf = sandbox_resolv_conf(
            self.host.read(),
            embedded=embedded,
            dns=sandbox.dns,
            dns_search=sandbox.dns_search,
            dns_options=sandbox.dns_options,
        )
        hosts = sandbox_hosts(
            sandbox.hostname,
            own_addresses(sandbox),
            legacy_link_hosts(sandbox, state.networks, running),
        )
        self.files.write(name, "resolv.conf", resolv_conf)
        self.files.write(name, "hosts", hosts)

    def forget(self, sandbox: Sandbox) -> None:
        """A sandbox removed: stop listening there and remove its files."""
        self.listeners.close(sandbox.id)
        if not sandbox.attached:
            self.files.remove(Path(sandbox.netns).name)

    async def close(self) -> None:
        self.listeners.close_all()


def _has_links(sandbox: Sandbox) -> bool:
    return any(e.links for e in sandbox.endpoints.values())
