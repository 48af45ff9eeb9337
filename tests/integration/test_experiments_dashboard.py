"""The dashboard renders in headless Chromium and shows a seeded experiment's arms and charts."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.experiments import (
    ADMIN,
    ADMIN_TOKEN,
    ask,
    experiment_body,
    live_server,
    make_app,
    make_settings,
)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture()
def browser() -> Iterator[Any]:
    """Headless Chromium through Debian's chromedriver (never a downloaded driver)."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromium-driver are not installed (apt-get install them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1200"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def seed(base: str) -> None:
    """An experiment with three arms, traffic and feedback."""
    arms = [
        {"name": "control", "configuration": "plain", "weight": 50},
        {"name": "treatment", "configuration": "friendly", "weight": 30},
        {"name": "terse", "configuration": "concise", "weight": 20},
    ]
    with httpx.Client(base_url=base, headers=ADMIN) as http:
        assert http.post("/admin/experiments", json=experiment_body(arms=arms)).status_code == 201
        for number in range(60):
            answer = ask(http, f"user-{number}").json()
            score = 1 if answer["ladder"]["arm"] != "control" or number % 2 else -1
            scored = {"response_id": answer["id"], "score": score, "user": f"user-{number}"}
            http.post("/v1/feedback", json=scored)


def test_dashboard_shows_the_arms_of_a_seeded_experiment_in_headless_chromium(
    tmp_path: Path, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    with live_server(make_app(settings)) as base:
        seed(base)
        browser.get(f"{base}/dashboard/login")
        browser.find_element(By.NAME, "token").send_keys(ADMIN_TOKEN)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(browser, 30).until(lambda driver: driver.current_url == f"{base}/dashboard")
        assert ADMIN_TOKEN not in browser.current_url
        assert all(ADMIN_TOKEN not in str(cookie) for cookie in browser.get_cookies())
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        section = browser.find_element(By.CSS_SELECTOR, 'section[data-experiment="support"]')
        rows = section.find_elements(By.CSS_SELECTOR, "tr.arm")
        assert [row.get_attribute("data-arm") for row in rows] == ["control", "treatment", "terse"]
        assert [row.find_elements(By.TAG_NAME, "td")[2].text for row in rows] == [
            "50.0 %",
            "30.0 %",
            "20.0 %",
        ]
        compared = section.find_elements(By.CSS_SELECTOR, "tr.comparison")
        assert [row.get_attribute("data-arm") for row in compared] == ["treatment", "terse"]
        assert "p=" in compared[0].text
        lines = section.find_elements(By.CSS_SELECTOR, "svg.chart polyline")
        assert {line.get_attribute("data-arm") for line in lines} == {
            "control",
            "treatment",
            "terse",
        }
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


def test_dashboard_refuses_a_wrong_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    with live_server(make_app(settings)) as base, httpx.Client(base_url=base) as http:
        assert http.post("/dashboard/login", data={"token": "wrong"}).status_code == 401
        assert http.get("/dashboard").status_code == 401
        assert http.get("/dashboard/login", params={"token": ADMIN_TOKEN}).status_code == 200
        assert http.get("/dashboard").status_code == 401, "a token in the URL logs no one in"
