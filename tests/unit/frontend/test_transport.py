"""Which gRPC transport serves which settings."""

from __future__ import annotations

import pytest

from volley.frontend.grpc import transport
from volley.frontend.grpc.transport import Transport, choose


def test_auto_prefers_native_when_installed() -> None:
    assert transport.native_available()
    chosen, why = choose("auto")
    assert chosen is Transport.NATIVE and "auto" in why


def test_grpcio_when_asked() -> None:
    assert choose("grpcio")[0] is Transport.GRPCIO
    assert choose("native")[0] is Transport.NATIVE


def test_tls_selects_grpcio_under_auto_and_is_refused_for_native() -> None:
    chosen, why = choose("auto", tls=True)
    assert chosen is Transport.GRPCIO and "TLS" in why
    with pytest.raises(ValueError, match="cannot serve TLS"):
        choose("native", tls=True)


def test_without_the_package_auto_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "native_available", lambda: False)
    chosen, why = choose("auto")
    assert chosen is Transport.GRPCIO and "not installed" in why
    with pytest.raises(ValueError, match="needs the pygrpc-native package"):
        choose("native")
