"""The portal page as an enterprise uses it: Debian's headless Chromium, driven through chromium-driver (selenium),
on the REAL page intake serves, with routing running so the case gets assigned. Screenshots are kept in
artifacts_dir(): portal-form.png, portal-tracking.png, portal-error.png."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.support.browser import artifacts_dir, chromium, distinct_colours
from tests.support.infra import Env, ServiceProcess

pytestmark = pytest.mark.integration
GOOD_CODE = "91150523W7WKKHDRJ7"
BAD_CODE = "91150523W7WKKHDRJ8"  # one character off: the check character no longer fits


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    driver_path = shutil.which("chromedriver")
    assert driver_path, "chromium-driver is not installed: `apt-get install chromium-driver` (.ci/run does it)"
    options = Options()
    options.binary_location = chromium()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(arg)
    options.add_argument("--window-size=430,1500")  # a phone's width
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def fill(driver: WebDriver, code: str) -> None:
    driver.find_element(By.ID, "enterprise_name").send_keys("开鲁县某食品有限公司")
    driver.find_element(By.ID, "credit_code").send_keys(code)
    Select(driver.find_element(By.ID, "region")).select_by_value("150523")
    Select(driver.find_element(By.ID, "category")).select_by_value("utilities")
    driver.find_element(By.CSS_SELECTOR, "input[name=kind][value=complaint]").click()
    driver.find_element(By.ID, "title").send_keys("工业园区频繁停水")
    driver.find_element(By.ID, "content").send_keys("工业园区本月已停水四次，未提前通知，生产线被迫停工。")
    driver.find_element(By.ID, "contact_name").send_keys("刘女士")
    driver.find_element(By.ID, "contact_phone").send_keys("139-1234-5678")


def shot(driver: WebDriver, name: str) -> None:
    path = artifacts_dir() / name
    path.unlink(missing_ok=True)
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(430, max(800, int(height) + 40))
    assert driver.save_screenshot(str(path))
    assert distinct_colours(path) > 50, f"{name} looks blank"


async def test_portal_page_submit_track_assigned_and_bad_code(env: Env, browser: WebDriver) -> None:
    routing = ServiceProcess("routing", env.environ(), env.tmp / "routing.log").start()
    intake = ServiceProcess("intake", env.environ(), env.tmp / "intake.log").start()
    try:
        browser.get(f"{intake.url}/portal")
        assert "问题线索和意见建议征集" in browser.title
        fill(browser, GOOD_CODE)
        assert browser.find_element(By.ID, "credit_code-msg").text == ""  # the inline check is happy
        shot(browser, "portal-form.png")
        browser.find_element(By.ID, "submit").click()
        number = WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "tracking-number").text.strip())
        assert number.startswith("PT")
        assert len(number) == 16
        assert "/portal/track/" in browser.current_url

        # The case travels intake → routing → complaints.lifecycle → intake's own table: wait for that event.
        deadline = time.monotonic() + 90
        state = ""
        while time.monotonic() < deadline:
            browser.get(f"{intake.url}/portal/track/{number}")
            state = browser.find_element(By.ID, "state").get_attribute("data-state") or ""
            if state == "assigned":
                break
            await asyncio.sleep(0.5)
        assert state == "assigned", routing.log_tail()
        assert browser.find_element(By.ID, "department").text == "开鲁县人民政府"
        page = browser.page_source
        assert "13912345678" not in page
        assert "5678" not in page
        shot(browser, "portal-tracking.png")

        browser.set_window_size(430, 1500)
        browser.get(f"{intake.url}/portal")
        fill(browser, BAD_CODE)
        inline = browser.find_element(By.ID, "credit_code-msg").text
        assert "校验位" in inline  # checked as it is typed, where JavaScript runs
        browser.find_element(By.ID, "title").clear()
        browser.find_element(By.ID, "title").send_keys("另一件事")
        browser.find_element(By.ID, "submit").click()
        message = WebDriverWait(browser, 30).until(
            lambda d: d.find_element(By.ID, "credit_code-msg").text if "提交未成功" in d.page_source else ""
        )
        assert "统一社会信用代码不正确" in message  # and again on the server, beside its field
        field = browser.find_element(By.ID, "credit_code-field")
        assert "err" in (field.get_attribute("class") or "")
        assert browser.find_element(By.ID, "credit_code").get_attribute("value") == BAD_CODE  # what was typed is kept
        assert browser.find_element(By.ID, "title").get_attribute("value") == "另一件事"
        shot(browser, "portal-error.png")
    finally:
        intake.stop()
        routing.stop()
