"""The unasked ARP answer an agent sends when it learns another host's endpoint."""

from __future__ import annotations

from berth.network.adapters.vxlan import arp_reply
from berth.network.domain.overlay import Neighbour


def test_the_answer_says_where_the_address_is_and_comes_from_the_bridge() -> None:
    frame = arp_reply("aa:bb:cc:dd:ee:01", Neighbour("10.72.0.9", "02:42:0a:48:00:09"))
    assert len(frame) == 42  # Ethernet 14 + ARP 28
    assert frame[0:6] == b"\xff" * 6  # to every sandbox on the bridge
    assert frame[6:12] == bytes.fromhex("aabbccddee01")  # the bridge's own MAC, not learnt
    assert frame[12:14] == b"\x08\x06"
    assert frame[20:22] == b"\x00\x02"  # a reply: it completes a pending request
    assert frame[22:28] == bytes.fromhex("02420a480009")  # sender: the remote endpoint
    assert frame[28:32] == bytes([10, 72, 0, 9])
    assert frame[38:42] == bytes([10, 72, 0, 9])
