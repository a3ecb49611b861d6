"""Webhook activities: a run's signed result to its callback URL, and budget alerts.

``chorus.deliver_callback`` POSTs a run's result to the run's callback URL;
``chorus.deliver_budget_alert`` POSTs a budget alert (returned by ``chorus.call_llm`` in
``LLMResponse.budget_alerts``) to ``CHORUS_BUDGET_ALERT_WEBHOOK_URL``.

Temporal owns retries (the workflow's ``CALLBACK_RETRY_POLICY``); each attempt is one POST,
signed afresh (new timestamp) with the same ``X-Chorus-Delivery`` id, and its outcome maps to:

- 2xx: delivered.
- 408, 429, 5xx, timeouts and connection errors: ``CallbackUnavailable``, retryable, with the
  receiver's ``Retry-After`` (capped by ``CHORUS_MAX_RETRY_AFTER_S``) as the next retry delay.
- Any other status (3xx included: redirects are not followed, so a signed body never reaches a
  host nobody named): ``CallbackRejected``, non-retryable.
- No ``CHORUS_CALLBACK_SECRET`` on the worker, or an invalid URL: ``CallbackNotConfigured``,
  non-retryable (an unsigned callback could not be trusted, so none is sent). A budget alert
  carries no run data and is sent unsigned without a secret, as before; a malformed secret or
  URL is ``CallbackNotConfigured`` for it too.

The mapping follows temporalio's ``contrib/openai_agents`` model activity.
"""

from __future__ import annotations

import json
import time

import httpx2
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.provider_adapters import parse_retry_after
from chorus.config.settings import Settings
from chorus.contracts import errors
from chorus.contracts.models import BudgetAlert, DeliverCallbackInput
from chorus.contracts.names import DELIVER_BUDGET_ALERT_ACTIVITY, DELIVER_CALLBACK_ACTIVITY
from chorus.integrations.webhooks import (
    ATTEMPT_HEADER,
    delivery_id,
    signed_headers,
    url_host,
    validate_callback_url,
)

USER_AGENT = "chorus-callbacks/1"


class CallbackActivities:
    """Delivers run callbacks and budget alerts, signed with ``CHORUS_CALLBACK_SECRET``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @activity.defn(name=DELIVER_CALLBACK_ACTIVITY)
    async def deliver_callback(self, input: DeliverCallbackInput) -> None:
        """POST ``input.payload`` as JSON to ``input.url`` with the signature headers.

        One HTTP client per attempt: a run delivers one callback, so a shared connection pool
        would buy nothing.

        Args:
            input: Receiver URL and the payload; the delivery id is
                ``<payload.workflow_id>:<payload.run_id>``.

        Raises:
            ApplicationError: ``CallbackUnavailable`` (retryable; ``next_retry_delay`` from
                ``Retry-After``) for 408/429/5xx, timeouts and connection errors;
                ``CallbackRejected`` (non-retryable) naming the status for other non-2xx
                answers; ``CallbackNotConfigured`` (non-retryable) when the worker has no
                callback secret or the URL is invalid.

        """
        secret = self._settings.callback_secret
        if secret is None or not secret.get_secret_value():
            raise ApplicationError(
                "callback not delivered: CHORUS_CALLBACK_SECRET is not set on this worker, "
                "and callbacks are never sent unsigned",
                type=errors.CALLBACK_NOT_CONFIGURED,
                non_retryable=True,
            )
        payload = input.payload
        announcement = None
        if payload.gate is not None:  # each announcement of a gate is its own delivery
            announcement = f"{payload.gate.key}:{int(payload.finished_at.timestamp() * 1000)}"
        delivery = delivery_id(payload.workflow_id, payload.run_id, announcement)
        await self._post(
            "callback",
            input.url,
            "callback_url",
            input.payload.model_dump_json().encode(),
            delivery,
        )

    @activity.defn(name=DELIVER_BUDGET_ALERT_ACTIVITY)
    async def deliver_budget_alert(self, alert: BudgetAlert) -> None:
        """POST a budget alert to ``CHORUS_BUDGET_ALERT_WEBHOOK_URL``; nothing when it is unset.

        The body is JSON: ``{"event": "budget_alert", "period", "spent_usd", "alert_usd",
        "limit_usd"}`` (USD amounts as ``chorus.call_llm`` saw them when the threshold was
        crossed). It is signed like run callbacks (Standard Webhooks ``webhook-*`` headers,
        delivery id ``budget-alert:<period>``, stable across attempts so a receiver
        deduplicates) when ``CHORUS_CALLBACK_SECRET`` is set, and sent unsigned otherwise.

        Args:
            alert: The period whose spend crossed its alert threshold, with the amounts.

        Raises:
            ApplicationError: As :meth:`deliver_callback`: ``CallbackUnavailable``
                (retryable) for 408/429/5xx, timeouts and connection errors,
                ``CallbackRejected`` (non-retryable) for other non-2xx answers,
                ``CallbackNotConfigured`` (non-retryable) for a malformed secret or URL.

        """
        url = self._settings.budget_alert_webhook_url
        if not url:
            return
        body = {"event": "budget_alert", **alert.model_dump(mode="json")}
        await self._post(
            "budget alert",
            url,
            "CHORUS_BUDGET_ALERT_WEBHOOK_URL",
            json.dumps(body).encode(),
            f"budget-alert:{alert.period}",
        )

    async def _post(self, what: str, url: str, url_field: str, body: bytes, delivery: str) -> None:
        """POST ``body`` (JSON) once, signed when a secret is set, and map the outcome.

        Args:
            what: What is delivered (``callback``, ``budget alert``), for messages.
            url: The receiver.
            url_field: The setting or field that named ``url``, for the invalid-URL message.
            body: The exact request body.
            delivery: The delivery id (``webhook-id``), the same for every attempt.

        Raises:
            ApplicationError: See :meth:`deliver_callback`.
        """
        info = activity.info()
        try:
            validate_callback_url(url, url_field)
        except ValueError as exc:
            raise ApplicationError(
                str(exc), type=errors.CALLBACK_NOT_CONFIGURED, non_retryable=True
            ) from None
        host = url_host(url)
        headers = {"content-type": "application/json"}
        secret = self._settings.callback_secret
        if secret is not None and secret.get_secret_value():
            try:
                headers = signed_headers(
                    secret.get_secret_value(), body, delivery, int(time.time())
                )
            except ValueError as exc:
                raise ApplicationError(
                    f"{what} not delivered: {exc}",
                    type=errors.CALLBACK_NOT_CONFIGURED,
                    non_retryable=True,
                ) from None
        headers[ATTEMPT_HEADER] = str(info.attempt)
        headers["User-Agent"] = USER_AGENT
        try:
            async with httpx2.AsyncClient(
                timeout=self._settings.callback_timeout_s, follow_redirects=False
            ) as http:
                response = await http.post(url, content=body, headers=headers)
        except httpx2.TimeoutException:
            raise ApplicationError(
                f"{what} to {host}: no answer within {self._settings.callback_timeout_s} s",
                type=errors.CALLBACK_UNAVAILABLE,
            ) from None
        except httpx2.TransportError as exc:
            raise ApplicationError(
                f"{what} to {host}: {type(exc).__name__}: {exc}",
                type=errors.CALLBACK_UNAVAILABLE,
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            activity.logger.info(
                "%s %s delivered to %s (HTTP %d, attempt %d)",
                what,
                delivery,
                host,
                status,
                info.attempt,
            )
            return
        if status in (408, 429) or status >= 500:
            raise ApplicationError(
                f"{what} to {host}: receiver answered HTTP {status}; retrying",
                type=errors.CALLBACK_UNAVAILABLE,
                next_retry_delay=parse_retry_after(
                    response.headers, self._settings.max_retry_after_s
                ),
            )
        raise ApplicationError(
            f"{what} to {host}: receiver answered HTTP {status}; not retried"
            + (" (redirects are not followed)" if 300 <= status < 400 else ""),
            type=errors.CALLBACK_REJECTED,
            non_retryable=True,
        )
