#!/usr/bin/env bash
# Installs the Debian packages berth needs, only those that are missing, so that
# `make setup` stays idempotent and quick on a machine that has them already.
set -euo pipefail

PACKAGES=(
  iproute2      # ip netns, for the network agent and its tests
  nftables      # nft: the network agent's firewall and NAT rules
  util-linux    # nsenter: commands in namespaces given by path; setpriv: MCP servers die with berth-mcpd
  iputils-ping  # ping, used by the network tests
  dnsmasq-base  # a real upstream resolver for the embedded DNS tests, and the DNS bench baseline
  bind9-dnsutils  # dig: DNS lookups from inside sandboxes in the tests
  dnsperf       # the DNS bench's load generator
  redis-server  # the cluster store of overlay networks, for the overlay tests
  iperf3        # throughput in the overlay bench
  docker-registry  # a real OCI registry for the model store's push and pull tests
  apache2-utils # htpasswd: the registry's basic-auth users in those tests
  nodejs     # npm, for the command-line tools in package.json (buf lints the contracts)
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "berth setup: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
