"""The dashboard renders in headless Chromium and shows what the results JSON and the audit trail
hold for experiments with real traffic: users and the served split per arm beside the weights,
start and duration, a UTC time axis, one colour per arm name across experiments, guardrails,
plan progress and the latest changes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
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
# Fixed salts: which user lands in which arm is the same on every run.
SUPPORT = experiment_body(
    salt="dashboard-support",
    arms=[
        {"name": "control", "configuration": "plain", "weight": 50},
        {"name": "treatment", "configuration": "friendly", "weight": 30},
        {"name": "terse", "configuration": "concise", "weight": 20},
    ],
    plan={"baseline": 0.5, "mde": 0.1, "traffic_per_day": 1000},
)
# `treatment` is the third arm here and the second in `support`, but second by name here and
# third there: a colour by position or by sorted position would differ between the two.
# Every response is slower than 1 µs: both treatments breach the guardrail and are paused.
BILLING = experiment_body(
    name="billing",
    model="billing",
    salt="dashboard-billing",
    arms=[
        {"name": "control", "configuration": "plain", "weight": 50},
        {"name": "verbose", "configuration": "friendly", "weight": 25},
        {"name": "treatment", "configuration": "concise", "weight": 25},
    ],
    guardrails=[{"metric": "latency_p95_ms", "max_value": 0.001}],
)


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


def _users(http: httpx.Client, model: str, users: range) -> None:
    for number in users:
        answer = ask(http, f"user-{number}", model).json()
        score = 1 if answer["ladder"]["arm"] != "control" or number % 2 else -1
        scored = {"response_id": answer["id"], "score": score, "user": f"user-{number}"}
        assert http.post("/v1/feedback", json=scored).status_code == 200


def seed(base: str) -> dict[str, dict[str, Any]]:
    """Two experiments through the real app; `support` changes its weights midway and gets
    anonymous requests too. Their results and audit trails as the admin API gives them."""
    with httpx.Client(base_url=base, headers=ADMIN) as http:
        for body in SUPPORT, BILLING:
            assert http.post("/admin/experiments", json=body).status_code == 201
        _users(http, "support", range(40))
        weights = {"weights": {"control": 20, "treatment": 60, "terse": 20}}
        assert http.post("/admin/experiments/support/weights", json=weights).status_code == 200
        _users(http, "support", range(30, 70))
        for _ in range(5):
            assert ask(http, None).status_code == 200
        _users(http, "billing", range(40))
        return {
            name: {
                "results": http.get(f"/admin/experiments/{name}/results").json(),
                "audit": http.get("/admin/audit", params={"experiment": name}).json(),
            }
            for name in ("support", "billing")
        }


def log_in(browser: Any, base: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    browser.get(f"{base}/dashboard/login")
    browser.find_element(By.NAME, "token").send_keys(ADMIN_TOKEN)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda driver: driver.current_url == f"{base}/dashboard")
    assert ADMIN_TOKEN not in browser.current_url
    assert all(ADMIN_TOKEN not in str(cookie) for cookie in browser.get_cookies())


def screenshot(browser: Any) -> Path:
    """The whole page as the admin sees it, kept as the test's artefact."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, max(1200, int(height) + 100))
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    return ARTIFACTS / "dashboard.png"


def percent(share: float) -> str:
    return f"{100 * share:.1f} %"


def check_arms(section: Any, found: dict[str, Any]) -> None:
    """Users, weights and served split per arm, as the results JSON has them."""
    from selenium.webdriver.common.by import By

    rows = section.find_elements(By.CSS_SELECTOR, "tr.arm")
    assert [row.get_attribute("data-arm") for row in rows] == [a["arm"] for a in found["arms"]]
    users = sum(arm["users"] for arm in found["arms"])
    for row, arm in zip(rows, found["arms"], strict=True):
        assert row.find_element(By.CSS_SELECTOR, "td.users").text == f"{arm['users']:,}"
        share = row.find_element(By.CSS_SELECTOR, "td.users-share").text
        assert share == percent(arm["users"] / users)
        assert row.find_element(By.CSS_SELECTOR, "td.weight").text == percent(arm["weight_share"])
        assert row.find_element(By.CSS_SELECTOR, "td.served").text == percent(arm["served_share"])


def check_time_axis(section: Any, timeline: dict[str, Any]) -> None:
    """Both charts label round UTC times between the first and the last request."""
    from selenium.webdriver.common.by import By

    end = timeline["start"] + 24 * timeline["width_s"]
    charts = section.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 2
    for chart in charts:
        ticks = chart.find_elements(By.CSS_SELECTOR, "text.x-tick")
        assert len(ticks) >= 2
        for tick in ticks:
            at = float(tick.get_attribute("data-at"))
            assert timeline["start"] - 1e-3 <= at <= end + 1e-3
            clock = datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%f")
            assert clock.startswith(tick.text), (tick.text, clock)
        assert "time (UTC)" in chart.text


def stroke(section: Any, arm: str) -> list[str]:
    """An arm's colour in the chart, in the legend and in the arms table."""
    from selenium.webdriver.common.by import By

    chart = section.find_element(By.CSS_SELECTOR, f'g.series[data-arm="{arm}"] path')
    legend = section.find_element(By.CSS_SELECTOR, f'g.legend[data-arm="{arm}"] line')
    row = section.find_element(By.CSS_SELECTOR, f'tr.arm[data-arm="{arm}"] svg.swatch line')
    return [line.get_attribute("stroke") for line in (chart, legend, row)]


def test_dashboard_shows_users_split_time_axis_colours_and_audit_in_headless_chromium(
    tmp_path: Path, db_url: str, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    settings = make_settings(
        tmp_path,
        db_url,
        guardrail_min_users=5,
        guardrail_check_every=1,
        guardrail_check_interval_s=0,
    )
    with live_server(make_app(settings)) as base:
        seeded = seed(base)
        log_in(browser, base)
        image = screenshot(browser)
        page = browser.page_source
        assert "<script" not in page and "http://" not in page and "https://" not in page
        support = browser.find_element(By.CSS_SELECTOR, 'section[data-experiment="support"]')
        billing = browser.find_element(By.CSS_SELECTOR, 'section[data-experiment="billing"]')
        found = seeded["support"]["results"]

        check_arms(support, found)
        check_arms(billing, seeded["billing"]["results"])
        users = sum(arm["users"] for arm in found["arms"])
        moved = [percent(a["weight_share"]) != percent(a["users"] / users) for a in found["arms"]]
        assert any(moved), "users keep their arm over the weight change"
        assert (
            "keep the arm they were first given"
            in support.find_element(By.CSS_SELECTOR, "p.split-note").text
        )

        started = datetime.fromtimestamp(found["started_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        assert f"started {started} UTC" in support.find_element(By.CSS_SELECTOR, "p.timing").text
        anonymous = support.find_element(By.CSS_SELECTOR, "p.anonymous").text
        assert found["anonymous"]["requests"] == 5 and ": 5 (" in anonymous

        check_time_axis(support, found["timeline"])
        markers = [m.text for m in support.find_elements(By.CSS_SELECTOR, "g.marker")]
        assert "v2 weights" in markers, "the weight change is marked on the charts"

        assert len(set(stroke(support, "treatment") + stroke(billing, "treatment"))) == 1
        assert stroke(support, "control") == stroke(billing, "control") != stroke(support, "terse")
        assert stroke(support, "treatment") != stroke(support, "terse")

        for name, section in ("support", support), ("billing", billing):
            entries = section.find_elements(By.CSS_SELECTOR, "tr.audit-entry")
            expected = seeded[name]["audit"][: settings.dashboard_audit_entries]
            assert [int(row.get_attribute("data-id")) for row in entries] == [
                entry["id"] for entry in expected
            ]
        actions = [
            row.get_attribute("data-action")
            for row in support.find_elements(By.CSS_SELECTOR, "tr.audit-entry")
        ]
        assert actions == ["weights", "create"]
        assert (
            "arms.treatment.weight: 30.0 → 60.0"
            in support.find_element(By.CSS_SELECTOR, 'tr.audit-entry[data-action="weights"]').text
        )

        plan = support.find_element(By.CSS_SELECTOR, "div.plan")
        assert float(plan.get_attribute("data-progress")) == pytest.approx(
            found["plan"]["progress"], abs=1e-4
        )
        assert f"{found['plan']['users_per_arm']:,} scored users per arm" in plan.text

        rails = {
            row.get_attribute("data-arm"): row.get_attribute("data-state")
            for row in billing.find_elements(By.CSS_SELECTOR, "tr.guardrail")
        }
        assert rails == {"verbose": "breached", "treatment": "breached"}
        for arm in "verbose", "treatment":
            row = billing.find_element(By.CSS_SELECTOR, f'tr.arm[data-arm="{arm}"]')
            assert "paused" in row.text
        assert "arm_value=" in billing.find_element(By.CSS_SELECTOR, "tr.guardrail").text
    assert image.stat().st_size > 10_000


def test_dashboard_refuses_a_wrong_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    with live_server(make_app(settings)) as base, httpx.Client(base_url=base) as http:
        assert http.post("/dashboard/login", data={"token": "wrong"}).status_code == 401
        assert http.get("/dashboard").status_code == 401
        assert http.get("/dashboard/login", params={"token": ADMIN_TOKEN}).status_code == 200
        assert http.get("/dashboard").status_code == 401, "a token in the URL logs no one in"
