"""Port choice for a local server: the configured port unless something listens there."""

from __future__ import annotations

import socket

from launcher.probes import free_port, port_is_free
from launcher.services import choose_port


def test_a_port_left_in_time_wait_by_a_closed_connection_counts_as_free() -> None:
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first, so its end waits in TIME_WAIT
        client.close()
    assert port_is_free(port)
    assert choose_port(f"redis://127.0.0.1:{port}/0") == port


def test_a_listening_port_is_taken_and_another_is_chosen() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", free_port()))
        squatter.listen()
        taken = squatter.getsockname()[1]
        assert not port_is_free(taken)
        assert choose_port(f"nats://127.0.0.1:{taken}") != taken
