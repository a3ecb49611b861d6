"""Temporal's standard client configuration: environment variables and TOML profiles.

Chorus reads the Temporal connection the way every Temporal SDK and the ``temporal`` CLI do,
through :mod:`temporalio.envconfig` (documented at
https://docs.temporal.io/develop/environment-configuration): a profile of the TOML config file
(``TEMPORAL_CONFIG_FILE``, default ``~/.config/temporalio/temporal.toml``; profile
``TEMPORAL_PROFILE``, default ``default``) overridden by ``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS``, ``TEMPORAL_TLS_*`` and
``TEMPORAL_GRPC_META_*``. So a worker, the CLI and the SDK reach Temporal Cloud (API key or
mTLS) or a self-hosted mTLS cluster with nothing but that configuration.

Precedence, per value: the environment (or a value passed to ``Settings(...)``) over the
profile in the file over Chorus's default (``localhost:7233``, namespace ``default``, no TLS).

What the SDK leaves vague is made strict here, so a mistake is named instead of surfacing as
a TLS handshake error: an empty variable counts as unset (an env file's ``TEMPORAL_API_KEY=``
does not switch TLS on), ``TEMPORAL_TLS`` must be a boolean, an explicitly named config file
must exist, a certificate or key file must exist and hold PEM of the right kind, and a client
certificate needs its key. An unknown key in the file is tolerated (the file is shared with the
``temporal`` CLI and newer tools may add keys) but logged with its line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from temporalio.envconfig import ClientConfigProfile, ClientConfigTLS, DataSource
from temporalio.service import TLSConfig

from chorus.contracts.errors import ChorusError

if TYPE_CHECKING:
    from temporalio.envconfig import ClientConnectConfig

    from chorus.config.settings import Settings

log = logging.getLogger(__name__)

ENV_PREFIX: Final = "TEMPORAL_"
DEFAULT_PROFILE: Final = "default"
TLS_ENV: Final = "TEMPORAL_TLS"
DISABLE_HOST_VERIFICATION_ENV: Final = "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION"
_BOOLEANS: Final = {"true": True, "1": True, "false": False, "0": False}
"""The spellings of ``TEMPORAL_TLS`` the SDK's core understands (case-insensitive); it reads
anything else, even ``yes``, as "TLS on" without saying so."""


class TemporalConfigError(ChorusError, RuntimeError):
    """The Temporal connection configuration cannot be used.

    The message names the file, profile, environment variable or TOML key and what is wrong
    with it; never the API key or a private key.
    """

    error_type: str = "TemporalConfigError"


@dataclass(frozen=True)
class _TLSSource:
    attribute: str  # field of temporalio.envconfig.ClientConfigTLS
    label: str
    env: str  # variable stem: <env>_PATH / <env>_DATA
    toml: str  # key stem in the profile's [tls] table: <toml>_path / <toml>_data
    kind: str  # "certificate" or "key"


_TLS_SOURCES: Final = (
    _TLSSource(
        "server_root_ca_cert",
        "server CA certificate",
        "TEMPORAL_TLS_SERVER_CA_CERT",
        "server_ca_cert",
        "certificate",
    ),
    _TLSSource(
        "client_cert",
        "client certificate",
        "TEMPORAL_TLS_CLIENT_CERT",
        "client_cert",
        "certificate",
    ),
    _TLSSource("client_private_key", "client key", "TEMPORAL_TLS_CLIENT_KEY", "client_key", "key"),
)


def temporal_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the ``TEMPORAL_*`` variables that are set to something, empty ones left out.

    Args:
        environ: The environment to read; default ``os.environ``.
    """
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k.startswith(ENV_PREFIX) and v.strip()}


def default_config_file() -> Path:
    """Return where the SDK looks for the config file when none is named.

    ``temporal.toml`` in ``temporalio`` under the user's configuration directory, as the
    SDK core's ``dirs::config_dir()`` finds it: ``$XDG_CONFIG_HOME`` or ``~/.config`` on
    Linux, ``~/Library/Application Support`` on macOS, ``%APPDATA%`` on Windows.
    """
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "temporalio" / "temporal.toml"


@dataclass(frozen=True)
class ProfileSource:
    """Which profile of which file a configuration comes from (for messages).

    Attributes:
        profile: The profile name (``default`` unless ``TEMPORAL_PROFILE`` says otherwise).
        config_file: The file named by ``TEMPORAL_CONFIG_FILE`` or ``Settings``, else the
            default location.
        file_named: Whether the file was named explicitly (it must then exist).
    """

    profile: str
    config_file: Path
    file_named: bool

    def describe(self) -> str:
        """Return ``profile 'x' of /path/temporal.toml``."""
        return f"profile {self.profile!r} of {self.config_file}"


def profile_source(
    profile: str | None, config_file: Path | None, env: Mapping[str, str]
) -> ProfileSource:
    """Resolve the profile name and config file from arguments, then ``env``, then defaults.

    Args:
        profile: A profile asked for in code (``Settings.temporal_profile``), or ``None``.
        config_file: A file asked for in code (``Settings.temporal_config_file``), or ``None``.
        env: The non-empty ``TEMPORAL_*`` variables (:func:`temporal_environment`).
    """
    named = config_file or (
        Path(env["TEMPORAL_CONFIG_FILE"]) if "TEMPORAL_CONFIG_FILE" in env else None
    )
    return ProfileSource(
        profile=profile or env.get("TEMPORAL_PROFILE") or DEFAULT_PROFILE,
        config_file=(named or default_config_file()).expanduser(),
        file_named=named is not None,
    )


def _check_booleans(env: Mapping[str, str]) -> None:
    value = env.get(TLS_ENV)
    if value is not None and value.strip().lower() not in _BOOLEANS:
        raise TemporalConfigError(
            f"{TLS_ENV}={value!r}: use true or false (or 1/0); the Temporal SDK would read "
            "any other value as TLS on"
        )
    verification = env.get(DISABLE_HOST_VERIFICATION_ENV)
    if verification is not None and _BOOLEANS.get(verification.strip().lower(), True):
        raise TemporalConfigError(
            f"{DISABLE_HOST_VERIFICATION_ENV} is not supported by the Temporal Python SDK, "
            "which always verifies the server's certificate: give the CA that signed it in "
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH, and TEMPORAL_TLS_SERVER_NAME when the "
            "certificate carries another host name"
        )


def load_profile(
    profile: str | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[ClientConfigProfile, ProfileSource]:
    """Load one Temporal client profile with the environment's overrides applied.

    Args:
        profile: Profile to read (``Settings.temporal_profile``); ``None`` means
            ``TEMPORAL_PROFILE``, else ``default``.
        config_file: TOML file to read (``Settings.temporal_config_file``); ``None`` means
            ``TEMPORAL_CONFIG_FILE``, else :func:`default_config_file` when it exists.
        environ: Environment to read instead of ``os.environ`` (tests).

    Returns:
        The profile as :meth:`temporalio.envconfig.ClientConfigProfile.load` returns it
        (``None`` fields when nothing configures them; TLS sources not read yet) and where it
        came from.

    Raises:
        TemporalConfigError: An explicitly named file is missing; the file is not valid TOML
            or a value has the wrong type (the message names the file and quotes the line);
            an explicitly named profile is not in the file; ``TEMPORAL_TLS`` is not a
            boolean; ``TEMPORAL_TLS_DISABLE_HOST_VERIFICATION`` is set.
    """
    env = temporal_environment(environ)
    _check_booleans(env)
    source = profile_source(profile, config_file, env)
    if source.file_named and not source.config_file.is_file():
        raise TemporalConfigError(
            f"Temporal config file {source.config_file} (TEMPORAL_CONFIG_FILE) does not exist"
        )
    path = source.config_file if source.config_file.is_file() else None

    def load(strict: bool) -> ClientConfigProfile:
        return ClientConfigProfile.load(
            profile=source.profile,
            config_source=path,
            disable_file=path is None,
            config_file_strict=strict,
            override_env_vars=env,
        )

    try:
        try:
            return load(strict=True), source
        except RuntimeError as exc:  # temporal_sdk_bridge.ConfigError
            if "unknown field" not in str(exc):
                raise
            log.warning(
                "Temporal config file %s: ignoring a key the Temporal SDK does not know: %s",
                source.config_file,
                " ".join(str(exc).split()),
            )
            return load(strict=False), source
    except RuntimeError as exc:
        detail = str(exc).removeprefix("Configuration loading error: ").strip()
        if detail.startswith("Profile "):
            where = f"{source.config_file}" if path else f"{source.config_file} (no such file)"
            raise TemporalConfigError(
                f"Temporal profile {source.profile!r} (TEMPORAL_PROFILE) is not in {where}"
            ) from None
        raise TemporalConfigError(f"Temporal config file {source.config_file}: {detail}") from None


def _origin(spec: _TLSSource, suffix: str, source: ProfileSource, env: Mapping[str, str]) -> str:
    variable = f"{spec.env}_{suffix.upper()}"
    if variable in env:
        return variable
    return f"tls.{spec.toml}_{suffix} in {source.describe()}"


def _read_tls_source(
    spec: _TLSSource, value: DataSource, source: ProfileSource, env: Mapping[str, str]
) -> tuple[bytes, str]:
    """Read one certificate or key and check it is PEM of the right kind.

    Returns:
        The bytes and a description of where they came from (a path, never the content).
    """
    if isinstance(value, Path):
        origin = f"{spec.label} file {value} ({_origin(spec, 'path', source, env)})"
        try:
            data = value.expanduser().read_bytes()
        except OSError as exc:
            raise TemporalConfigError(f"{origin}: {exc.strerror or exc}") from None
    else:
        origin = f"{spec.label} ({_origin(spec, 'data', source, env)})"
        data = value.encode() if isinstance(value, str) else value
    try:
        if spec.kind == "certificate":
            x509.load_pem_x509_certificates(data)
        else:
            serialization.load_pem_private_key(data, password=None)
    except TypeError:  # an encrypted key: Temporal's TLS stack cannot decrypt it
        raise TemporalConfigError(
            f"{origin}: the key is encrypted; give an unencrypted PEM key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TemporalConfigError(f"{origin}: not a PEM {spec.kind}") from None
    if isinstance(value, Path):
        return data, f"{spec.label} {value}"
    return data, f"{spec.label} from {_origin(spec, 'data', source, env)}"


@dataclass(frozen=True)
class TemporalConnection:
    """Where and how to connect: the resolved ``Client.connect`` arguments.

    Attributes:
        address: ``host:port`` of the Temporal frontend.
        namespace: The namespace.
        api_key: Sent as ``authorization: Bearer <key>`` (never shown by ``repr``).
        tls: ``False`` (plaintext), a :class:`temporalio.service.TLSConfig`, or ``None``: TLS
            only when there is an API key (the SDK's rule).
        rpc_metadata: gRPC metadata sent with every call (``TEMPORAL_GRPC_META_*``).
        tls_files: Where each TLS certificate or key came from, for messages.
        source: The profile and file that were read.
    """

    address: str
    namespace: str
    api_key: str | None = field(default=None, repr=False)
    tls: bool | TLSConfig | None = None
    rpc_metadata: Mapping[str, str] = field(default_factory=dict)
    tls_files: tuple[str, ...] = ()
    source: ProfileSource | None = None

    @property
    def uses_tls(self) -> bool:
        """Whether the connection is encrypted."""
        return self.tls is not False and (self.tls is not None or bool(self.api_key))

    @property
    def client_certificate(self) -> bool:
        """Whether a client certificate is presented (mTLS)."""
        return isinstance(self.tls, TLSConfig) and self.tls.client_cert is not None

    def connect_kwargs(self) -> dict[str, Any]:
        """Return the keyword arguments for :meth:`temporalio.client.Client.connect`."""
        kwargs: dict[str, Any] = {"target_host": self.address, "namespace": self.namespace}
        if self.api_key:
            kwargs["api_key"] = self.api_key
        if self.tls is not None:
            kwargs["tls"] = self.tls
        if self.rpc_metadata:
            kwargs["rpc_metadata"] = dict(self.rpc_metadata)
        return kwargs

    def describe(self) -> str:
        """Say how the connection is secured, e.g. ``TLS with client certificate ...; API key``.

        Names certificate files and whether an API key is used; never the key.
        """
        if not self.uses_tls:
            tls = "no TLS"
        else:
            tls = "TLS"
            if isinstance(self.tls, TLSConfig) and self.tls.domain:
                tls += f" (server name {self.tls.domain})"
            tls += ", " + (", ".join(self.tls_files) if self.tls_files else "system CAs")
            if not self.client_certificate:
                tls += ", no client certificate"
        return f"{tls}; {'API key' if self.api_key else 'no API key'}"


def resolve_connection(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> TemporalConnection:
    """Build the connection Chorus uses from ``settings`` and Temporal's configuration.

    The address and namespace are the settings' (which already hold the environment's or
    the profile's values, see :class:`chorus.config.settings.Settings`); the API key, TLS and
    gRPC metadata come from the profile with the environment's overrides
    (:meth:`temporalio.envconfig.ClientConfigProfile.to_client_connect_config`). Certificate
    and key files are read and checked here.

    Args:
        settings: ``temporal_address``, ``temporal_namespace``, ``temporal_profile``,
            ``temporal_config_file``.
        environ: Environment to read instead of ``os.environ`` (tests).

    Returns:
        The resolved connection.

    Raises:
        TemporalConfigError: See :func:`load_profile`; also a certificate or key file that is
            missing, unreadable or not PEM of its kind (the message names the file and the
            variable or TOML key), or a client certificate without its key or a key without
            its certificate.
    """
    env = temporal_environment(environ)
    profile, source = load_profile(settings.temporal_profile, settings.temporal_config_file, env)
    config: ClientConnectConfig = dataclasses.replace(profile, tls=None).to_client_connect_config()
    tls: bool | TLSConfig | None = None
    files: list[str] = []
    if profile.tls is not None and profile.tls.disabled is True:
        tls = False
    elif profile.tls is not None:
        tls, files = _tls_config(profile.tls, source, env)
    return TemporalConnection(
        address=settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=config.get("api_key") or None,
        tls=tls,
        rpc_metadata=dict(config.get("rpc_metadata") or {}),
        tls_files=tuple(files),
        source=source,
    )


def _tls_config(
    tls: ClientConfigTLS, source: ProfileSource, env: Mapping[str, str]
) -> tuple[TLSConfig, list[str]]:
    read: dict[str, bytes | None] = {}
    files: list[str] = []
    for spec in _TLS_SOURCES:
        value = getattr(tls, spec.attribute)
        if value is None:
            read[spec.attribute] = None
            continue
        data, shown = _read_tls_source(spec, value, source, env)
        read[spec.attribute] = data
        files.append(shown)
    if (read["client_cert"] is None) != (read["client_private_key"] is None):
        have, lack = (
            (_TLS_SOURCES[1], _TLS_SOURCES[2])
            if read["client_cert"] is not None
            else (_TLS_SOURCES[2], _TLS_SOURCES[1])
        )
        raise TemporalConfigError(
            f"a TLS {have.label} is configured without its {lack.label}: set {lack.env}_PATH "
            f"(or tls.{lack.toml}_path in {source.describe()})"
        )
    config = TLSConfig(
        domain=tls.server_name,
        server_root_ca_cert=read["server_root_ca_cert"],
        client_cert=read["client_cert"],
        client_private_key=read["client_private_key"],
    )
    return config, files
