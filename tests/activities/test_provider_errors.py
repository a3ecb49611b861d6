"""Provider error mapping: Retry-After forms and x-should-retry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from activities.llm import parse_retry_after


def test_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}, 60) == timedelta(seconds=3)
    assert parse_retry_after({"retry-after-ms": "1500"}, 60) == timedelta(seconds=1.5)
    assert parse_retry_after({"retry-after": "900"}, 60) == timedelta(seconds=60)
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    delay = parse_retry_after({"retry-after": later}, 60)
    assert delay is not None and 25 <= delay.total_seconds() <= 31
    assert parse_retry_after({"retry-after": "soon"}, 60) is None
    assert parse_retry_after({}, 60) is None


def test_x_should_retry_header_overrides_the_status():
    import httpx2
    import openai

    from activities.llm import map_provider_error

    def status_error(code: int, should_retry: str | None) -> openai.APIStatusError:
        headers = {"x-should-retry": should_retry} if should_retry else {}
        request = httpx2.Request("POST", "http://stub/v1/chat/completions")
        response = httpx2.Response(code, headers=headers, request=request, json={})
        return openai.APIStatusError("scripted", response=response, body=None)

    assert map_provider_error(status_error(500, None), "openai", "m", 60).non_retryable is False
    assert map_provider_error(status_error(500, "false"), "openai", "m", 60).non_retryable
    assert map_provider_error(status_error(400, None), "openai", "m", 60).non_retryable
    retried = map_provider_error(status_error(400, "true"), "openai", "m", 60)
    assert retried.non_retryable is False and retried.type == "InvalidRequest"
