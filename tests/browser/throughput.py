"""The operator's throughput with the dashboard open on a job, against the same job
with no page open: a job of N one-item noop batches, rounds alternating, the job's
own start and end times (from the journal) as the measure.

    python3 throughput.py WASMBATCH_BIN NOOP_PLUGIN [BATCHES] [ROUNDS]

Prints one line per run and the median ratio (with the page / without).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN, NOOP = sys.argv[1], sys.argv[2]
BATCHES = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
ROUNDS = int(sys.argv[4]) if len(sys.argv) > 4 else 3


def get(url):
    with urllib.request.urlopen(url, timeout=60) as answer:
        return json.loads(answer.read())


work = tempfile.mkdtemp()
with open(os.path.join(work, "apis.toml"), "w") as f:
    f.write(f'max_workers = 2\n[[api]]\nname = "noop"\nplugin = "{NOOP}"\nmax_workers = 2\n')
log = open(os.path.join(work, "operator.log"), "w+")
operator = subprocess.Popen(
    [BIN, "--log-format", "json", "operator", "--config", f"{work}/apis.toml", "--data-dir", f"{work}/data",
     "--host", "127.0.0.1", "--port", "0"],
    stderr=log,
)
addr = None
deadline = time.time() + 120
while addr is None and time.time() < deadline:
    log.seek(0)
    for line in log:
        if '"listening"' in line:
            addr = json.loads(line)["addr"]
    time.sleep(0.05)
if addr is None:
    sys.exit("the operator did not start")
url = f"http://{addr}"
body = json.dumps({"workers": 2, "item_list": {"items": list(range(BATCHES)), "batch_size": 1}}).encode()

driver = None


def browser():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"), options=options)


def run(with_page):
    global driver
    request = urllib.request.Request(f"{url}/batch/noop", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=120) as answer:
        job_id = json.loads(answer.read())["job_id"]
    if with_page:
        driver.get(f"{url}/ui/#/job/noop/{job_id}")
    polls = 0
    while True:
        status = get(f"{url}/batch/noop?jobID={job_id}")["job_status"]
        if status["status"] not in ("pending", "running"):
            break
        time.sleep(1.0)
    if with_page:
        time.sleep(1.5)  # the page's last poll shows the end
        bar = driver.find_element("id", "job-bar")
        polls = bar.get_attribute("data-succeeded")
        driver.get("about:blank")
    assert status["status"] == "succeeded", status
    # The job's life in the journal: from its first recorded outcome to its last.
    timeline = get(f"{url}/batch/noop/jobs/{job_id}/timeline")
    return job_id, status, timeline["end"] - timeline["start"], polls


driver = browser()
ratios, rows = [], []
for r in range(ROUNDS):
    times = {}
    for with_page in ((False, True) if r % 2 == 0 else (True, False)):
        job_id, status, elapsed, shown = run(with_page)
        times[with_page] = elapsed
        print(f"round {r + 1}: {'page open' if with_page else 'no page  '} {BATCHES:,} batches in {elapsed:.2f} s "
              f"({BATCHES / elapsed:,.0f}/s){f'; the page showed {int(shown):,} succeeded' if with_page else ''}",
              flush=True)
    ratios.append(times[False] / times[True])
driver.quit()
operator.terminate()
operator.wait(timeout=60)
print(f"throughput with the page open / without: median {statistics.median(ratios):.3f} "
      f"(runs: {', '.join(f'{x:.3f}' for x in ratios)})")
