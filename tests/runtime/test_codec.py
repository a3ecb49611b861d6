"""Encrypted history: the AES-GCM payload codec, the codec server, a real run on the dev server."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import uvicorn
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError

from chorus.config.settings import Settings
from chorus.contracts.models import AgentStep, SequentialInput
from chorus.runtime.codec import CodecError, EncryptionCodec, generate_key, parse_keys
from chorus.runtime.converter import chorus_data_converter, data_converter
from starter.codec_server import build_app
from starter.dev import free_port, temporal_binary
from tests.conftest import agent, running_worker

K1 = generate_key()
K2 = generate_key()
UI = "http://localhost:8233"


def payloads(*values: object) -> list[Payload]:
    return chorus_data_converter.payload_converter.to_payloads(list(values))


# --- codec ---------------------------------------------------------------------------------------


async def test_round_trip_hides_data_and_original_encoding():
    codec = EncryptionCodec.from_spec(f"k1:{K1}")
    original = payloads("the secret document", {"task": "summarize"})
    encoded = await codec.encode(original)

    assert [dict(p.metadata) for p in encoded] == [
        {"encoding": b"binary/encrypted", "encryption-key-id": b"k1"}
    ] * 2
    assert all(b"secret" not in p.data and b"json/plain" not in p.data for p in encoded)
    assert await codec.decode(encoded) == original


async def test_same_plaintext_gives_different_ciphertexts():
    codec = EncryptionCodec.from_spec(f"k1:{K1}")
    first, second = await codec.encode(payloads("same", "same"))
    assert first.data != second.data


async def test_unencrypted_payloads_pass_through_decode():
    codec = EncryptionCodec.from_spec(f"k1:{K1}")
    plain = payloads("written before encryption was turned on")
    assert await codec.decode(plain) == plain


async def test_rotation_decodes_old_keys_and_encrypts_with_the_new_one():
    old = await EncryptionCodec.from_spec(f"k1:{K1}").encode(payloads("old run"))
    rotated = EncryptionCodec.from_spec(f"k2:{K2},k1:{K1}")

    assert await rotated.decode(old) == payloads("old run")
    new = await rotated.encode(payloads("new run"))
    assert new[0].metadata["encryption-key-id"] == b"k2"

    only_new = EncryptionCodec.from_spec(f"k2:{K2}")
    with pytest.raises(CodecError, match="'k1'") as missing:
        await only_new.decode(old)
    assert K1 not in str(missing.value) and K2 not in str(missing.value)


async def test_tampered_payload_is_rejected():
    codec = EncryptionCodec.from_spec(f"k1:{K1}")
    [encoded] = await codec.encode(payloads("amount: 10"))
    flipped = bytearray(encoded.data)
    flipped[-20] ^= 0x01
    tampered = Payload(metadata=encoded.metadata, data=bytes(flipped))
    with pytest.raises(CodecError, match="'k1' failed authentication"):
        await codec.decode([tampered])
    with pytest.raises(CodecError, match="failed authentication"):
        await codec.decode([Payload(metadata=encoded.metadata, data=b"short")])


SHORT = base64.b64encode(b"\x07" * 16).decode()


@pytest.mark.parametrize(
    ("spec", "expected", "secret"),
    [
        ("", "is empty", ""),
        (f"k1:{K1},k1:{K2}", "key id 'k1' twice", K2),
        (f"k1:{SHORT}", "key 'k1' .* decodes to 16 bytes; AES-256-GCM needs exactly 32", SHORT),
        (f"k1:{K1[:-2]}!!", "key 'k1' .* not valid base64", K1[:-2]),
        (f"k1:{K1},{K2}", "entry 2 is not '<key id>:<base64 key>'", K2),
        (f"k1:{K1},bad id:{K2}", "entry 2 is not", K2),
    ],
)
def test_bad_key_config_names_the_key_id_and_rule_not_the_key(spec, expected, secret):
    with pytest.raises(CodecError, match=expected) as error:
        parse_keys(spec)
    message = str(error.value)
    assert K1 not in message and (not secret or secret not in message)
    # No chained exception (e.g. binascii's) that a traceback could print.
    assert error.value.__cause__ is None
    assert error.value.__context__ is None or error.value.__suppress_context__


def test_repr_and_settings_hide_keys():
    codec = EncryptionCodec.from_spec(f"k2:{K2},k1:{K1}")
    assert repr(codec) == "EncryptionCodec(active_key_id='k2', key_ids=('k2', 'k1'))"
    settings = Settings(codec_keys=f"k1:{K1}", codec_server_token="tok-secret")
    assert K1 not in repr(settings) and "tok-secret" not in repr(settings)
    assert K1 not in str(settings.model_dump())


async def test_data_converter_encrypts_models_and_failure_messages():
    assert data_converter(Settings(codec_keys=None)) is chorus_data_converter
    converter = data_converter(Settings(codec_keys=f"k1:{K1}"))
    assert isinstance(converter.payload_codec, EncryptionCodec)

    run_input = SequentialInput(task="t", document="MARKER-doc", steps=[AgentStep(agent="a")])
    [encoded] = await converter.encode([run_input])
    assert b"MARKER" not in encoded.SerializeToString()
    assert await converter.decode([encoded], [SequentialInput]) == [run_input]

    failure = Failure()
    await converter.encode_failure(ApplicationError("quoted MARKER-doc", "MARKER-detail"), failure)
    assert b"MARKER" not in failure.SerializeToString()
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError) and decoded.message == "quoted MARKER-doc"
    assert decoded.details == ("MARKER-detail",)


# --- codec server --------------------------------------------------------------------------------


def server_settings(**overrides: Any) -> Settings:
    return Settings(codec_keys=f"k2:{K2},k1:{K1}", codec_server_cors_origins=UI, **overrides)


def as_json(items: list[Payload]) -> dict[str, Any]:
    """The body the Temporal UI sends: protobuf JSON of ``Payloads``."""
    return {"payloads": [json_format.MessageToDict(p) for p in items]}


def from_json(body: dict[str, Any]) -> list[Payload]:
    return [json_format.ParseDict(p, Payload()) for p in body["payloads"]]


@asynccontextmanager
async def http(settings: Settings) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=build_app(settings))
    async with httpx2.AsyncClient(transport=transport, base_url="http://codec") as http_client:
        yield http_client


async def test_codec_server_decodes_and_encodes():
    original = payloads("from the UI", {"n": 1})
    encrypted = await EncryptionCodec.from_spec(f"k1:{K1}").encode(original)
    async with http(server_settings()) as api:
        decoded = await api.post("/decode", json=as_json(encrypted), headers={"X-Namespace": "x"})
        assert decoded.status_code == 200
        assert from_json(decoded.json()) == original

        encoded = await api.post("/encode", json=as_json(original))
        assert [p.metadata["encryption-key-id"] for p in from_json(encoded.json())] == [b"k2"] * 2
        back = await api.post("/decode", json=encoded.json())
        assert from_json(back.json()) == original

        unknown = EncryptionCodec.from_spec(f"k9:{generate_key()}")
        failed = await api.post("/decode", json=as_json(await unknown.encode(original)))
        assert failed.status_code == 400 and "'k9'" in failed.json()["error"]
        assert (await api.post("/decode", content=b"not json")).status_code == 400
        empty = await api.post("/decode", json={"payloads": []})
        assert empty.json() == {"payloads": []}
        assert (await api.get("/healthz")).json() == {"status": "ok"}


async def test_codec_server_requires_the_token_when_set():
    encrypted = await EncryptionCodec.from_spec(f"k1:{K1}").encode(payloads("x"))
    async with http(server_settings(codec_server_token="s3cret")) as api:
        missing = await api.post("/decode", json=as_json(encrypted), headers={"Origin": UI})
        wrong = await api.post(
            "/decode", json=as_json(encrypted), headers={"Authorization": "Bearer nope"}
        )
        right = await api.post(
            "/decode", json=as_json(encrypted), headers={"Authorization": "Bearer s3cret"}
        )
        health = await api.get("/healthz")
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    # The browser can read the 401 (CORS headers are on it) and show why decoding failed.
    assert missing.headers["access-control-allow-origin"] == UI
    assert "s3cret" not in missing.text and health.status_code == 200


async def test_codec_server_cors_preflight_for_the_ui():
    preflight = {
        "Origin": UI,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
    }
    async with http(server_settings(codec_server_token="s3cret")) as api:
        allowed = await api.options("/decode", headers=preflight)
        other = await api.options("/decode", headers={**preflight, "Origin": "https://evil.test"})

    assert allowed.status_code == 200  # no token needed: browsers never send it on preflight
    assert allowed.headers["access-control-allow-origin"] == UI
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    allowed_headers = {
        h.strip().lower() for h in allowed.headers["access-control-allow-headers"].split(",")
    }
    assert {"content-type", "x-namespace", "authorization"} <= allowed_headers
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers


def test_codec_server_refuses_to_start_without_keys():
    with pytest.raises(CodecError, match="CHORUS_CODEC_KEYS is not set"):
        build_app(Settings(codec_keys=None))


# --- a real run on the dev server ----------------------------------------------------------------


def texts(node: Any) -> Iterator[str]:
    """Every string in a JSON document, plus its base64 decoding where it is base64."""
    if isinstance(node, dict):
        for value in node.values():
            yield from texts(value)
    elif isinstance(node, list):
        for value in node:
            yield from texts(value)
    elif isinstance(node, str):
        yield node
        try:
            yield base64.b64decode(node, validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            pass


def mentions(document: Any, needle: str) -> bool:
    return any(needle in text for text in texts(document))


@asynccontextmanager
async def codec_server(settings: Settings) -> AsyncIterator[str]:
    """The codec server on a real port, as the UI and CLI reach it."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(build_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:  # uvicorn exposes a flag, not an event
            assert not task.done(), "codec server did not start"
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def temporal_show(address: str, workflow_id: str, *extra: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        temporal_binary(),
        "workflow",
        "show",
        "--workflow-id",
        workflow_id,
        "--address",
        address,
        "-o",
        "json",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def test_encrypted_run_history_has_no_plaintext_and_codec_server_decodes_it(
    client, make_settings, fake_llm
):
    marker = f"MARKER{uuid.uuid4().hex}"
    keys = f"k1:{K1}"
    settings = make_settings(
        [agent(n, ["local:fake"]) for n in ("analyst", "writer")],
        codec_keys=keys,
        codec_server_token="tok",
    )
    address = client.service_client.config.target_host
    encrypting = await Client.connect(
        address, namespace=client.namespace, data_converter=data_converter(settings)
    )
    async with running_worker(encrypting, settings, lambda _pool: fake_llm.call_llm) as chorus:
        handle = await chorus.start_sequential(
            f"Summarize {marker}",
            ["analyst", "writer"],
            document=f"Quarterly numbers {marker}",
            document_name=f"{marker}.txt",
            # The default id carries a slug of the task, which Temporal cannot encrypt.
            workflow_id=f"seq-encrypted-{uuid.uuid4().hex[:8]}",
        )
        result = await handle.result()
    assert result.output == "writer output [saw: analyst]"
    assert fake_llm.calls[0].document == f"Quarterly numbers {marker}"

    shown = await temporal_show(address, handle.workflow_id)
    events = shown["events"]
    assert events[-1]["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"
    assert mentions(shown, "binary/encrypted")
    assert not mentions(shown, marker) and not mentions(shown, "output [saw:")
    description = await client.get_workflow_handle(handle.workflow_id).describe()
    assert description.status == WorkflowExecutionStatus.COMPLETED

    # What the UI (and `temporal --codec-endpoint`) does: send the payloads to the codec server.
    async with codec_server(settings) as endpoint:
        decoded = await temporal_show(
            address, handle.workflow_id, "--codec-endpoint", endpoint, "--codec-auth", "Bearer tok"
        )
    assert mentions(decoded, f"Quarterly numbers {marker}")
    assert mentions(decoded, "writer output [saw: analyst]")
    assert not mentions(decoded, "binary/encrypted")
