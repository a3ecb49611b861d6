"""Chorus over TLS, mTLS and an API key, configured the way every Temporal SDK is.

The dev server speaks plaintext only (``temporal server start-dev`` has no TLS flags), so a
TLS-terminating proxy (asyncio + ssl, ALPN ``h2``, client certificates required for mTLS) sits in
front of the session's dev server, with a CA, a server certificate for localhost/127.0.0.1 and
client certificates generated here. The connection is configured only through Temporal's
standard environment (``TEMPORAL_TLS_*``, ``TEMPORAL_API_KEY``, ``TEMPORAL_GRPC_META_*``) or a
TOML profile selected with ``TEMPORAL_PROFILE``; Chorus's ``connect()`` reads it. The proxy
records the client certificate of every connection and, when asked, the HTTP/2 request headers
the client sent (decoded passively with ``h2``), so the API key is checked on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import TLSConfig
from temporalio.testing import WorkflowEnvironment

from chorus.config.settings import Settings
from chorus.config.temporal_profile import TemporalConfigError, resolve_connection
from chorus.contracts.errors import ChorusUnavailableError
from chorus.runtime.converter import connect
from tests.conftest import FakeLLM, agent, running_worker

CLIENT_CN = "chorus-test-client"
CONNECT_TIMEOUT_S = 30


# --- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files in one directory: a CA, a server pair, a client pair, and strangers."""

    directory: Path

    def __getitem__(self, stem: str) -> str:
        return str(self.directory / stem)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(
    directory: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{stem}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    usage: str,
) -> x509.Certificate:
    """A certificate valid for a day: a CA (``issuer`` None), a server or a client."""
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=usage == "ca", path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if usage == "ca":
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        purpose = (
            ExtendedKeyUsageOID.SERVER_AUTH
            if usage == "server"
            else (ExtendedKeyUsageOID.CLIENT_AUTH)
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    if usage == "server":
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """``ca``, ``server``, ``client`` (signed by ``ca``), ``other-ca`` and ``rogue`` (signed by
    ``other-ca``), each as ``<stem>.pem`` and ``<stem>.key``."""
    directory = tmp_path_factory.mktemp("pki")
    keys = {
        stem: ec.generate_private_key(ec.SECP256R1())
        for stem in ("ca", "other-ca", "server", "client", "rogue")
    }
    ca = _certificate("chorus-test-ca", keys["ca"], None, "ca")
    other = _certificate("another-ca", keys["other-ca"], None, "ca")
    _write(directory, "ca", keys["ca"], ca)
    _write(directory, "other-ca", keys["other-ca"], other)
    signed_by_ca = (ca.subject, keys["ca"])
    _write(
        directory,
        "server",
        keys["server"],
        _certificate("localhost", keys["server"], signed_by_ca, "server"),
    )
    _write(
        directory,
        "client",
        keys["client"],
        _certificate(CLIENT_CN, keys["client"], signed_by_ca, "client"),
    )
    _write(
        directory,
        "rogue",
        keys["rogue"],
        _certificate("rogue-client", keys["rogue"], (other.subject, keys["other-ca"]), "client"),
    )
    return Pki(directory)


# --- the TLS-terminating proxy -------------------------------------------------------------


class _RequestHeaders:
    """Decodes the HTTP/2 request headers a client sends, without answering (passive)."""

    def __init__(self, sink: list[dict[str, str]]) -> None:
        config = h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8", validate_inbound_headers=False
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.sink = sink
        self.broken = False

    def feed(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.broken = True  # the real server answers; this copy only reads the headers
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.sink.append({str(k): str(v) for k, v in event.headers or []})
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self.conn.data_to_send()  # discarded: the real server's frames go to the client


class TLSProxy:
    """TLS (optionally mTLS) on 127.0.0.1, forwarding the plaintext to ``upstream``."""

    def __init__(self, upstream: str, pki: Pki, *, require_client_cert: bool) -> None:
        self.upstream = upstream.rsplit(":", 1)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pki["server.pem"], pki["server.key"])
        self.context.set_alpn_protocols(["h2"])  # gRPC's HTTP/2
        if require_client_cert:
            self.context.load_verify_locations(pki["ca.pem"])
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.client_subjects: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.connections: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

        self.address = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.connections:
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        peer = writer.get_extra_info("peercert") or {}
        subject = dict(pair[0] for pair in peer.get("subject", ()))
        self.client_subjects.append(subject.get("commonName", ""))
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.upstream[0], int(self.upstream[1])
            )
            await asyncio.gather(
                self._pipe(reader, upstream_writer, _RequestHeaders(self.headers)),
                self._pipe(upstream_reader, writer, None),
            )
        except (asyncio.CancelledError, OSError):
            pass
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()
            self.connections.discard(task)

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tap: _RequestHeaders | None
    ) -> None:
        try:
            while data := await reader.read(65536):
                if tap is not None:
                    tap.feed(data)
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def tls_proxy(
    env: WorkflowEnvironment, pki: Pki, *, require_client_cert: bool = True
) -> AsyncIterator[TLSProxy]:
    proxy = TLSProxy(
        env.client.service_client.config.target_host, pki, require_client_cert=require_client_cert
    )
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


# --- the environment ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def temporal_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No ``TEMPORAL_*`` variable and no config file but what each test sets."""
    import os

    for name in list(os.environ):
        if name.startswith("TEMPORAL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # no ~/.config/temporalio
    yield


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def mtls_env(pki: Pki, address: str) -> dict[str, str]:
    return {
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": pki["ca.pem"],
        "TEMPORAL_TLS_CLIENT_CERT_PATH": pki["client.pem"],
        "TEMPORAL_TLS_CLIENT_KEY_PATH": pki["client.key"],
    }


async def namespace_name(client: Client) -> str:
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=client.namespace)
    )
    return described.namespace_info.name


# --- tests ---------------------------------------------------------------------------------


async def test_mtls_from_the_environment_runs_a_chorus_run(
    env: WorkflowEnvironment,
    make_settings: Callable[..., Settings],
    pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with tls_proxy(env, pki) as proxy:
        set_env(monkeypatch, **mtls_env(pki, proxy.address))
        base = make_settings([agent("writer", ["local:fake"])])
        # The test's database and catalog; the address from TEMPORAL_ADDRESS.
        settings = Settings(**base.model_dump(exclude={"temporal_address"}))
        assert settings.temporal_address == proxy.address

        client = await asyncio.wait_for(connect(settings), CONNECT_TIMEOUT_S)
        tls = client.service_client.config.tls
        assert isinstance(tls, TLSConfig) and tls.client_cert is not None
        assert await namespace_name(client) == "default"

        fake = FakeLLM()
        async with running_worker(client, settings, lambda _pool: fake.call_llm) as chorus:
            handle = await chorus.start_sequential("Brief me", ["writer"])
            result = await asyncio.wait_for(handle.result(), 60)
        assert result.output == "writer output [saw: ]"
        assert proxy.client_subjects and set(proxy.client_subjects) == {CLIENT_CN}


REFUSED = {
    "no client certificate": (
        {"TEMPORAL_TLS_SERVER_CA_CERT_PATH": "ca.pem"},
        ["TLS, server CA certificate", "no client certificate", "may require a client certificate"],
    ),
    "wrong CA": (
        {
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH": "other-ca.pem",
            "TEMPORAL_TLS_CLIENT_CERT_PATH": "client.pem",
            "TEMPORAL_TLS_CLIENT_KEY_PATH": "client.key",
        },
        ["other-ca.pem", "UnknownIssuer", "not signed by the CA in use"],
    ),
    "client certificate of another CA": (
        {
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH": "ca.pem",
            "TEMPORAL_TLS_CLIENT_CERT_PATH": "rogue.pem",
            "TEMPORAL_TLS_CLIENT_KEY_PATH": "rogue.key",
        },
        ["client certificate", "rogue.pem", "may not accept this client certificate"],
    ),
    "no TLS": ({}, ["no TLS; no API key", "may require TLS"]),
    "wrong server name": (
        {
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH": "ca.pem",
            "TEMPORAL_TLS_CLIENT_CERT_PATH": "client.pem",
            "TEMPORAL_TLS_CLIENT_KEY_PATH": "client.key",
            "TEMPORAL_TLS_SERVER_NAME": "temporal.example.com",
        },
        ["server name temporal.example.com", "does not carry the host name"],
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_a_refused_connection_says_why(
    case: str, env: WorkflowEnvironment, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, expected = REFUSED[case]
    async with tls_proxy(env, pki) as proxy:
        set_env(monkeypatch, **{name: pki[stem] for name, stem in files.items() if "PATH" in name})
        set_env(monkeypatch, **{n: v for n, v in files.items() if "PATH" not in n})
        settings = Settings(temporal_address=proxy.address)
        with pytest.raises(ChorusUnavailableError) as raised:
            await asyncio.wait_for(connect(settings), CONNECT_TIMEOUT_S)
    message = str(raised.value)
    assert message.startswith(f"cannot reach Temporal at {proxy.address} (namespace default; ")
    for text in expected:
        assert text in message, message
    assert CLIENT_CN not in proxy.client_subjects  # no connection got through


async def test_a_toml_profile_selected_by_temporal_profile(
    env: WorkflowEnvironment, pki: Pki, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with tls_proxy(env, pki) as proxy:
        config = tmp_path / "temporal.toml"
        config.write_text(
            # The default profile points nowhere: only the selected one can work.
            '[profile.default]\naddress = "127.0.0.1:9"\n\n'
            f'[profile.secure]\naddress = "{proxy.address}"\nnamespace = "default"\n\n'
            "[profile.secure.tls]\n"
            'server_name = "localhost"\n'
            f'server_ca_cert_path = "{pki["ca.pem"]}"\n'
            f'client_cert_path = "{pki["client.pem"]}"\n'
            f'client_key_path = "{pki["client.key"]}"\n'
        )
        set_env(monkeypatch, TEMPORAL_CONFIG_FILE=str(config), TEMPORAL_PROFILE="secure")
        settings = Settings()
        assert (settings.temporal_address, settings.temporal_namespace) == (
            proxy.address,
            "default",
        )
        client = await asyncio.wait_for(connect(settings), CONNECT_TIMEOUT_S)
        assert await namespace_name(client) == "default"
        await client.service_client.check_health()
        assert proxy.client_subjects and set(proxy.client_subjects) == {CLIENT_CN}
        connection = resolve_connection(settings)
        assert connection.describe() == (
            f"TLS (server name localhost), server CA certificate {pki['ca.pem']}, "
            f"client certificate {pki['client.pem']}, client key {pki['client.key']}; no API key"
        )


async def test_the_api_key_is_sent_as_a_bearer_token_over_tls(
    env: WorkflowEnvironment, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f"tk-{uuid.uuid4().hex}"
    async with tls_proxy(env, pki, require_client_cert=False) as proxy:
        set_env(
            monkeypatch,
            TEMPORAL_ADDRESS=proxy.address,
            TEMPORAL_API_KEY=key,
            TEMPORAL_TLS_SERVER_CA_CERT_PATH=pki["ca.pem"],
            TEMPORAL_GRPC_META_X_CHORUS_TENANT="acme",
        )
        client = await asyncio.wait_for(connect(Settings()), CONNECT_TIMEOUT_S)
        assert await namespace_name(client) == "default"
    calls = [h for h in proxy.headers if h.get(":path", "").startswith("/temporal.api.")]
    assert calls, proxy.headers
    assert all(h.get("authorization") == f"Bearer {key}" for h in calls)
    assert all(h.get("x-chorus-tenant") == "acme" for h in calls)
    assert any(h[":path"].endswith("/DescribeNamespace") for h in calls)

    # A failure names the API key's use, never the key.
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", pki["other-ca.pem"])
    async with tls_proxy(env, pki, require_client_cert=False) as proxy:
        with pytest.raises(ChorusUnavailableError) as raised:
            await asyncio.wait_for(
                connect(Settings(temporal_address=proxy.address)), CONNECT_TIMEOUT_S
            )
    assert "; API key)" in str(raised.value) and key not in str(raised.value)


def test_nothing_configured_connects_as_before() -> None:
    connection = resolve_connection(Settings())
    assert connection.connect_kwargs() == {"target_host": "localhost:7233", "namespace": "default"}
    assert connection.describe() == "no TLS; no API key"


def test_environment_over_profile_over_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text(
        '[profile.default]\naddress = "file-host:7233"\nnamespace = "file-ns"\n'
        'api_key = "file-key"\n[profile.default.grpc_meta]\nx-team = "a"\n'
    )
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config))
    from_file = resolve_connection(settings := Settings())
    assert (settings.temporal_address, settings.temporal_namespace) == ("file-host:7233", "file-ns")
    assert from_file.api_key == "file-key" and from_file.uses_tls  # an API key implies TLS
    assert from_file.rpc_metadata == {"x-team": "a"}
    assert "file-key" not in repr(from_file)

    set_env(
        monkeypatch,
        TEMPORAL_NAMESPACE="env-ns",
        TEMPORAL_API_KEY="env-key",
        TEMPORAL_GRPC_META_X_TEAM="b",
        TEMPORAL_TLS="false",
    )
    from_env = resolve_connection(settings := Settings())
    assert (settings.temporal_address, settings.temporal_namespace) == ("file-host:7233", "env-ns")
    assert (from_env.api_key, from_env.rpc_metadata) == ("env-key", {"x-team": "b"})
    assert from_env.tls is False and not from_env.uses_tls
    # Values given in code win over both.
    explicit = Settings(temporal_address="code-host:1", temporal_namespace="code-ns")
    assert (explicit.temporal_address, explicit.temporal_namespace) == ("code-host:1", "code-ns")
    # An empty variable (an env file's `TEMPORAL_API_KEY=`) counts as unset.
    monkeypatch.delenv("TEMPORAL_CONFIG_FILE")
    set_env(monkeypatch, TEMPORAL_API_KEY="", TEMPORAL_TLS="")
    assert resolve_connection(Settings()).describe() == "no TLS; no API key"


BAD_CONFIG: dict[str, tuple[dict[str, str], str | None, list[str]]] = {
    "missing client certificate file": (
        {
            "TEMPORAL_TLS_CLIENT_CERT_PATH": "{dir}/absent.pem",
            "TEMPORAL_TLS_CLIENT_KEY_PATH": "{dir}/client.key",
        },
        None,
        [
            "client certificate file {dir}/absent.pem (TEMPORAL_TLS_CLIENT_CERT_PATH)",
            "No such file",
        ],
    ),
    "certificate without its key": (
        {"TEMPORAL_TLS_CLIENT_CERT_PATH": "{dir}/client.pem"},
        None,
        ["client certificate is configured without its client key", "TEMPORAL_TLS_CLIENT_KEY_PATH"],
    ),
    "a certificate as the key": (
        {
            "TEMPORAL_TLS_CLIENT_CERT_PATH": "{dir}/client.pem",
            "TEMPORAL_TLS_CLIENT_KEY_PATH": "{dir}/client.pem",
        },
        None,
        ["client key file {dir}/client.pem (TEMPORAL_TLS_CLIENT_KEY_PATH): not a PEM key"],
    ),
    "a key as the CA": (
        {"TEMPORAL_TLS_SERVER_CA_CERT_PATH": "{dir}/ca.key"},
        None,
        [
            "server CA certificate file {dir}/ca.key (TEMPORAL_TLS_SERVER_CA_CERT_PATH)",
            "certificate",
        ],
    ),
    "missing file in a profile": (
        {"TEMPORAL_PROFILE": "secure"},
        '[profile.secure]\naddress = "h:1"\n[profile.secure.tls]\n'
        'client_cert_path = "{dir}/gone.pem"\nclient_key_path = "{dir}/client.key"\n',
        ["{dir}/gone.pem (tls.client_cert_path in profile 'secure' of {file})"],
    ),
    "malformed TOML": (
        {},
        '[profile.default]\naddress = "h:1"\n[profile.default.tls\n',
        ["Temporal config file {file}: TOML parse error at line 3"],
    ),
    "wrong type in TOML": (
        {},
        "[profile.default]\naddress = 7233\n",
        ["Temporal config file {file}: TOML parse error at line 2", "expected a string"],
    ),
    "unknown profile": (
        {"TEMPORAL_PROFILE": "prod"},
        '[profile.default]\naddress = "h:1"\n',
        ["Temporal profile 'prod' (TEMPORAL_PROFILE) is not in {file}"],
    ),
    "config file named but absent": (
        {"TEMPORAL_CONFIG_FILE": "{dir}/nowhere.toml"},
        None,
        ["Temporal config file {dir}/nowhere.toml (TEMPORAL_CONFIG_FILE) does not exist"],
    ),
    "TEMPORAL_TLS not a boolean": (
        {"TEMPORAL_TLS": "yes"},
        None,
        ["TEMPORAL_TLS='yes': use true or false"],
    ),
    "host verification off": (
        {"TEMPORAL_TLS_DISABLE_HOST_VERIFICATION": "true"},
        None,
        ["TEMPORAL_TLS_DISABLE_HOST_VERIFICATION is not supported"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIG))
def test_a_bad_configuration_is_named(
    case: str, pki: Pki, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    variables, toml, expected = BAD_CONFIG[case]
    config = tmp_path / "temporal.toml"
    fill: dict[str, Any] = {"dir": pki.directory, "file": config}
    if toml is not None:
        config.write_text(toml.format(**fill))
        monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config))
    set_env(monkeypatch, **{k: v.format(**fill) for k, v in variables.items()})
    with pytest.raises(TemporalConfigError) as raised:
        resolve_connection(Settings(temporal_address="h:1", temporal_namespace="default"))
    for text in expected:
        assert text.format(**fill) in str(raised.value), str(raised.value)
