"""Ports picked for local servers are never ones the kernel may hand to an outgoing connection meanwhile."""

from __future__ import annotations

import socket

from shared.devtools.infra.ports import ephemeral_range, free_port, port_is_free


def test_a_picked_port_is_free_and_below_the_ephemeral_range() -> None:
    low, _high = ephemeral_range()
    picked = {free_port() for _ in range(50)}
    assert all(10_000 <= port < low for port in picked), sorted(picked)
    assert all(port_is_free(port) for port in picked)
    assert len(picked) > 1  # random: two callers do not get the same port


def test_the_preferred_port_when_free_and_another_when_it_is_taken() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        taken = server.getsockname()[1]
        assert not port_is_free(taken)
        assert free_port(taken) != taken
    free = free_port()
    assert free_port(free) == free
