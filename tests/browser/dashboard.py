"""Drives the operator's dashboard in headless Chromium, as a person would.

    python3 dashboard.py OPERATOR_URL TOKEN SCREENSHOT_DIR

Logs in with TOKEN; submits jobs through the job API (as a script would, with the
bearer token); watches a job's progress bar reach 100 %; opens a slow job and stops it
with the page's button and its confirmation; opens a job with dead letters and
re-runs them with the button; presses "Reload config". Saves a screenshot of each
view in SCREENSHOT_DIR. Prints one JSON line of what it saw; exits non-zero on the
first expectation not met (with the page's text).
"""

import json
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

URL, TOKEN, SHOTS = sys.argv[1], sys.argv[2], sys.argv[3]
WAIT = 60


def api(method, path, body=None):
    request = urllib.request.Request(
        URL + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def submit(api_name, items, batch_size=1, workers=2):
    spec = api("POST", f"/batch/{api_name}", {"workers": workers, "item_list": {"items": items, "batch_size": batch_size}})
    return spec["job_id"]


options = webdriver.ChromeOptions()
for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000", "--disable-gpu"):
    options.add_argument(flag)
options.binary_location = "/usr/bin/chromium"
driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"), options=options)
wait = WebDriverWait(driver, WAIT, poll_frequency=0.1)
seen = {}


def fail(what):
    body = driver.find_element(By.TAG_NAME, "body").text if driver else ""
    print(f"FAILED: {what}\n--- page ---\n{body}", file=sys.stderr)
    driver.save_screenshot(f"{SHOTS}/failure.png")
    driver.quit()
    sys.exit(1)


def until(what, condition):
    try:
        return wait.until(condition)
    except Exception as e:  # noqa: BLE001 - any failure of the wait is the test's failure
        fail(f"{what} ({type(e).__name__})")


def shot(name):
    time.sleep(0)  # the page is drawn: every wait above watched the element itself
    driver.save_screenshot(f"{SHOTS}/{name}.png")


try:
    # The page asks for a token, refuses a wrong one, takes the right one.
    driver.get(URL + "/")
    until("the login form", ec.visibility_of_element_located((By.ID, "token")))
    driver.find_element(By.ID, "token").send_keys("not-the-token-0123456789")
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    until("a refused token", ec.text_to_be_present_in_element((By.ID, "login-error"), "not valid"))
    driver.find_element(By.ID, "token").clear()
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    until("the list of APIs", ec.visibility_of_element_located((By.CSS_SELECTOR, "#apis tr[data-api='sum']")))
    cookies = {c["name"]: c for c in driver.get_cookies()}
    session = cookies.get("wasmbatch_session")
    if not session or not session.get("httpOnly") or session.get("sameSite") != "Strict":
        fail(f"the session cookie is not HttpOnly and SameSite=Strict: {session}")
    seen["cookie"] = "HttpOnly; SameSite=Strict"

    # A job submitted through the API shows up, and its bar fills.
    done_id = submit("sum", [[i] for i in range(1, 401)], batch_size=4)
    row = f"#jobs tr[data-job='{done_id}']"
    until("the new job in the list", ec.presence_of_element_located((By.CSS_SELECTOR, row)))
    until(
        "the job's bar at 100 %",
        lambda d: d.find_element(By.CSS_SELECTOR, f"{row} .pct").text == "100 %"
        and "succeeded" in d.find_element(By.CSS_SELECTOR, row).text,
    )
    bar = driver.find_element(By.CSS_SELECTOR, f"{row} .bar")
    seen["bar"] = {k: bar.get_attribute(f"data-{k}") for k in ("succeeded", "failed", "total")}
    if seen["bar"] != {"succeeded": "100", "failed": "0", "total": "100"}:
        fail(f"the bar's counts: {seen['bar']}")
    shot("dashboard-jobs")

    # The job's page: counts and charts, of a job of a few seconds with varied batch
    # times and a few failures.
    items = [f"sleep:{10 + (i * 37) % 90}" if i % 25 else "error:a failed batch" for i in range(160)]
    chart_id = submit("misbehave", items, batch_size=1, workers=2)
    driver.find_element(By.CSS_SELECTOR, row).click()
    until("the job's page", ec.text_to_be_present_in_element((By.ID, "job-title"), done_id))
    until("the rate chart", lambda d: int(d.find_element(By.ID, "chart-rate").get_attribute("data-points") or 0) >= 1)
    driver.get(f"{URL}/ui/#/job/misbehave/{chart_id}")
    until("the charted job's page", ec.text_to_be_present_in_element((By.ID, "job-title"), chart_id))
    until("the charted job ended", lambda d: d.find_element(By.ID, "job-facts").get_attribute("data-status") == "completed_with_failures")
    until("a chart of several steps", lambda d: int(d.find_element(By.ID, "chart-rate").get_attribute("data-points") or 0) >= 3)
    seen["chart_bars"] = len(driver.find_elements(By.CSS_SELECTOR, "#chart-rate rect"))
    seen["chart_lines"] = len(driver.find_elements(By.CSS_SELECTOR, "#chart-time polyline"))
    shot("dashboard-job")

    # A slow job, stopped with the button and its confirmation.
    slow_id = submit("misbehave", ["sleep:200"] * 400, batch_size=1, workers=1)
    driver.get(f"{URL}/ui/#/job/misbehave/{slow_id}")
    until("the slow job running", ec.text_to_be_present_in_element((By.ID, "job-facts"), "running"))
    until("the stop button", ec.element_to_be_clickable((By.ID, "job-stop")))
    driver.find_element(By.ID, "job-stop").click()
    until("the confirmation", ec.visibility_of_element_located((By.ID, "confirm-ok")))
    shot("dashboard-stop")
    driver.find_element(By.ID, "confirm-ok").click()
    until("the job stopped", lambda d: d.find_element(By.ID, "job-facts").get_attribute("data-status") == "stopped")
    seen["stopped"] = api("GET", f"/batch/misbehave?jobID={slow_id}")["job_status"]["status"]

    # A job with dead letters; retried with the button, as a new job.
    failing_id = submit("misbehave", ["ok", "error:bad batch <b>not bold</b>", "ok", "error:again"], batch_size=1)
    driver.get(f"{URL}/ui/#/job/misbehave/{failing_id}")
    until("the dead letters", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr")) == 2)
    text = driver.find_element(By.ID, "dead-letters").text
    if "<b>not bold</b>" not in text:
        fail("a dead letter's message is not shown as text")
    seen["escaped"] = not driver.find_elements(By.CSS_SELECTOR, "#dead-letters b")
    driver.execute_script("document.getElementById('job-retry').scrollIntoView()")
    shot("dashboard-dead-letters")
    until("the retry button", ec.element_to_be_clickable((By.ID, "job-retry")))
    driver.find_element(By.ID, "job-retry").click()
    until("the re-run's page", lambda d: failing_id not in d.find_element(By.ID, "job-title").text)
    retry_id = driver.find_element(By.ID, "job-title").text.split(" / ")[1]
    until("the re-run ended", lambda d: d.find_element(By.ID, "job-facts").get_attribute("data-status") not in ("pending", "running", None))
    seen["retry"] = api("GET", f"/batch/misbehave?jobID={retry_id}")["job_status"]["total_batch_count"]

    # Reload: the configuration is read again, and the page says so.
    driver.get(URL + "/ui/")
    until("the list again", ec.visibility_of_element_located((By.ID, "reload")))
    driver.find_element(By.ID, "reload").click()
    until("the reload's outcome", ec.text_to_be_present_in_element((By.ID, "notice"), "configuration reloaded"))
    seen["reload"] = driver.find_element(By.ID, "notice").text
    print(json.dumps(seen))
finally:
    driver.quit()
