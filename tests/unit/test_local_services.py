"""`sipec up`: a port already in use is refused before any service starts (a service that cannot bind its port
would otherwise look healthy while another process answers there)."""

from __future__ import annotations

import socket

import pytest

from orchestrator.local import LocalServicesError, _port_in_use, up


def test_a_busy_port_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert _port_in_use(port)
        with pytest.raises(LocalServicesError, match=f"port\\(s\\) in use: segnet {port}"):
            up(tmp_path / "models", ["segnet"], tmp_path / "state", ports={"segnet": port}, timeout_s=5)
        assert not (tmp_path / "state" / "logs").exists()          # nothing was spawned
    assert not _port_in_use(port)
