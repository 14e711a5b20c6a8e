"""The pure parts of sandbox networking: policy parsing, rulesets, DNS packets, slots."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from engine.errors import GroveError
from engine.net import dns, nft
from engine.net.policy import Mode, parse
from engine.net.slots import Slot, capacity, taken_slots


def test_policies_parse_and_print_back() -> None:
    for text in ("off", "published", "egress"):
        assert str(parse(text)) == text
    policy = parse("allow=10.1.2.3:443, example.org ,10.9.0.0/16,[fd00::1]:53")
    assert policy.mode is Mode.ALLOW and policy.egress and policy.ingress
    assert [str(r) for r in policy.allow] == ["10.1.2.3:443", "example.org", "10.9.0.0/16",
                                              "[fd00::1]:53"]  # fmt: skip
    assert policy.names == ["example.org"]
    assert not parse("off").ingress and not parse("published").egress


@pytest.mark.parametrize(
    "text", ["", "open", "allow=", "allow=a,,b", "allow=10.0.0.1:0", "allow=10.0.0.1:99999",
             "allow=bad_name!", "allow=[fd00::1", "allow=-x.org"],
)  # fmt: skip
def test_bad_policies_fail_with_a_remedy(text: str) -> None:
    with pytest.raises(GroveError) as err:
        parse(text)
    assert err.value.code == "invalid_argument" and err.value.remedy


def test_a_policy_chain_accepts_what_it_allows_then_drops() -> None:
    table = nft.HostTable("abc123", ipaddress.IPv4Network("10.199.0.0/16"))
    slot = Slot(3, "abc123", table.range)
    rules = [(ipaddress.ip_network("10.1.2.3"), 443), (ipaddress.ip_network("10.9.0.0/16"), None)]
    text = table.change(slot, parse("allow=10.1.2.3:443,10.9.0.0/16"), rules)
    lines = text.splitlines()
    assert lines[0] == "flush chain inet grove_abc123 slot_3"
    assert "ip daddr 10.1.2.3/32 tcp dport 443 accept" in text
    assert "ip daddr 10.9.0.0/16 accept" in text
    assert lines[-1].endswith("counter drop")
    assert "accept" not in table.change(slot, parse("published"), [])
    assert table.change(slot, parse("egress"), []).splitlines()[-2].endswith(" accept")
    built = table.rebuild({slot: (parse("off"), [])})
    assert built.startswith("add table inet grove_abc123\ndelete table inet grove_abc123\n")
    assert '"gvabc123-3" : jump slot_3' in built


def test_slots_are_distinct_30s_and_skip_host_addresses() -> None:
    network = ipaddress.IPv4Network("10.199.0.0/16")
    slots = [Slot(n, "t", network) for n in range(3)]
    assert [s.host_ip for s in slots] == ["10.199.0.1", "10.199.0.5", "10.199.0.9"]
    assert [s.ns_ip for s in slots] == ["10.199.0.2", "10.199.0.6", "10.199.0.10"]
    assert capacity(network) == 16384
    assert taken_slots(network, {"10.199.0.6", "192.168.1.1"}) == {1}
    assert len(slots[2].host_device) <= 15


def _query(name: str, qtype: int = dns.TYPE_A) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return (
        struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", qtype, 1)
    )


def test_dns_answers_pinned_names_and_refuses_the_rest() -> None:
    query = _query("World-A.test")
    assert dns.parse_question(query) == ("world-a.test", dns.TYPE_A, len(query))
    reply = dns.answer(query, ["198.18.1.2", "fd00::2"])
    flags, qd, an = struct.unpack("!HHH", reply[2:8])
    assert reply[:2] == b"\x12\x34" and flags & 0x8000 and flags & 0xF == 0
    assert (qd, an) == (1, 1) and reply.endswith(bytes([198, 18, 1, 2]))
    refused = dns.answer(query, [], dns.RCODE_REFUSED)
    assert struct.unpack("!H", refused[2:4])[0] & 0xF == dns.RCODE_REFUSED
    assert dns.parse_question(b"\0" * 5) is None
    assert dns.parse_question(reply) is None  # a response is not a query
