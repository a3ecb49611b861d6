"""The drafts page in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``).

Two browsers open the same draft as two users: what one saves appears in the other's page
live (Server-Sent Events), comments show up in both, the history says who changed what, and
a stale save is refused with the API's message while the other user's text is kept.
Skipped when Chromium or its driver is not installed (CI installs both: ``.ci/run``).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest

from starter.api import build_app
from tests.api.support import SERVER_SECRET, new_key, serving
from tests.conftest import agent, running_worker

pytestmark = pytest.mark.skipif(
    not (
        shutil.which("chromedriver")
        and (shutil.which("chromium") or shutil.which("chromium-browser"))
    ),
    reason="needs Debian's chromium and chromium-driver",
)


@contextmanager
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.set_window_size(1200, 900)
    try:
        yield driver
    finally:
        driver.quit()


async def until(check: Callable[[], Any], within_s: float = 20.0) -> Any:
    """Poll ``check`` (run in a thread: WebDriver calls block) until it returns truthy."""
    async with asyncio.timeout(within_s):
        while True:
            value = await asyncio.to_thread(check)
            if value:
                return value
            await asyncio.sleep(0.2)


def open_draft(driver: Any, url: str, user: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "open").click()


def text_of(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)


def content(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, "content").get_property("value"))


def type_and_save(driver: Any, text: str, summary: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "content")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "summary").send_keys(summary)
    driver.find_element(By.ID, "save").click()


async def test_two_browsers_edit_one_draft(client: Any, make_settings: Any, fake_llm: Any) -> None:
    from selenium.webdriver.common.by import By

    settings = make_settings([agent("writer", ["local:fake"])], api_key_secret=SERVER_SECRET)
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        key = await new_key(chorus, settings, "page", ["drafts:read", "drafts:edit"])
        draft = await chorus.start_draft(
            "Release notes", "alice", content="First line.", collaborators={"bob": "editor"}
        )
        async with serving(build_app(settings, chorus=chorus)) as base:
            url = f"{base}/drafts/{draft}"
            with browser() as alice, browser() as bob:
                await asyncio.to_thread(open_draft, alice, url, "alice", key)
                await asyncio.to_thread(open_draft, bob, url, "bob", key)
                for page in (alice, bob):
                    await until(partial(lambda p: content(p) == "First line.", page))
                    assert text_of(page, "title") == "Release notes"
                    # the sign-in form gives way to the draft ([hidden] beats the form's CSS)
                    assert not page.find_element(By.ID, "login").is_displayed()
                    assert not page.find_element(By.ID, "notice").is_displayed()
                    assert "bob (editor)" in text_of(page, "collaborators")

                # alice saves; bob's page shows her text and who changed it, without reloading
                await asyncio.to_thread(
                    type_and_save, alice, "First line. Second line by Alice.", "add a line"
                )
                await until(lambda: "Saved version 2" in text_of(alice, "saved"))
                await until(lambda: content(bob) == "First line. Second line by Alice.")
                assert text_of(bob, "version") == "2"
                await until(lambda: "v2 alice: add a line" in text_of(bob, "history"))

                # bob saves on top; alice sees it live
                await asyncio.to_thread(type_and_save, bob, "Bob rewrote it.", "rewrite")
                await until(lambda: content(alice) == "Bob rewrote it.")
                await until(lambda: "v3 bob: rewrite" in text_of(alice, "history"))

                # a comment from bob appears in both pages
                box = bob.find_element(By.ID, "comment-text")
                await asyncio.to_thread(box.send_keys, "Is this final?")
                await asyncio.to_thread(bob.find_element(By.ID, "comment").click)
                for page in (alice, bob):
                    await until(
                        partial(lambda p: "bob: Is this final?" in text_of(p, "comments"), page)
                    )

                # alice types (unsaved) while bob saves: her text is kept, a notice offers his
                box = alice.find_element(By.ID, "content")
                await asyncio.to_thread(box.send_keys, " Alice typing")
                await asyncio.to_thread(type_and_save, bob, "Bob again.", "again")
                await until(lambda: "Version 4 by bob is newer" in text_of(alice, "notice"))
                assert content(alice) == "Bob rewrote it. Alice typing"
                # her save on version 3 conflicts with bob's version 4: refused, shown, nothing lost
                await asyncio.to_thread(alice.find_element(By.ID, "save").click)
                error = await until(lambda: text_of(alice, "error"))
                assert "version" in error.lower()
                assert content(alice) == "Bob rewrote it. Alice typing"
                view = await chorus.draft(draft)
                assert view.content == "Bob again." and view.version == 4
                # no script errors in either page (network entries: the expected 409)
                for page in (alice, bob):
                    logs = page.get_log("browser")
                    errors = [
                        e for e in logs if e["level"] == "SEVERE" and e["source"] != "network"
                    ]
                    assert not errors, errors
