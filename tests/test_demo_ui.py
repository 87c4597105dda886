"""The demo's own Airflow UI, checked as a newcomer would: in headless Chromium (Debian's ``chromium``).

One demo (the rental and warehouse DAGs on a small city) and one started UI serve every test;
Chromium is driven through its DevTools protocol (the ``websockets`` client in the venv), logged
in with the token the simple auth manager gives for the password it wrote. The last test stops it.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.demo import password_file, run_demo
from pipelines.demo_ui import MEMORY_BUDGET, MEMORY_FILE, PIDS_FILE, demo_processes, serve, stop
from pipelines.warehouse_schema import PUBLISHED_TABLES

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
SOURCE_DAG = "zerocert_source_rental"
STAGED_LINE = re.compile(r"rental \d{4}-\d\d-\d\d: (\d+) in, (\d+) accepted, \d+ quarantined")
DAG_IDS = {f"zerocert_source_{p.stem}" for p in (REPO / "schemas").glob("*.yaml")} | {"zerocert_warehouse"}


class Page:
    """One headless Chromium tab, driven through the DevTools protocol."""

    def __init__(self, chromium: str, profile: Path) -> None:
        from websockets.sync.client import connect

        self.process = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--window-size=1400,1000",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and len(active.read_text().split()) == 2) and time.monotonic() < deadline:
            time.sleep(0.1)
        port = active.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            tab = next(t for t in json.loads(answer.read()) if t["type"] == "page")
        self.stack = contextlib.ExitStack()
        self.socket = self.stack.enter_context(connect(tab["webSocketDebuggerUrl"], max_size=None))
        self.ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        number = next(self.ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == number:
                assert "error" not in message, message["error"]
                return message.get("result", {})

    def evaluate(self, script: str):
        return self.call("Runtime.evaluate", expression=script, returnByValue=True)["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def text_once(self, wanted, timeout: float = 60) -> str:
        """The page's visible text once ``wanted(text)`` holds (or at the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.evaluate("document.body ? document.body.innerText : ''") or ""
            if wanted(text) or time.monotonic() > deadline:
                return text
            time.sleep(0.5)

    def click(self, scope: str, label: str) -> bool:
        script = (
            f"(() => {{ const b = [...document.querySelectorAll({json.dumps(scope + ' button')})]"
            f".find(b => b.innerText.trim() === {json.dumps(label)}); if (b) b.click(); return Boolean(b); }})()"
        )
        return bool(self.evaluate(script))

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self.stack.close()
        self.process.terminate()
        self.process.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _api(port: int, token: str, path: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v2/{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium, installed by .ci/browser where it is missing (as `make test` does)."""
    if shutil.which("chromium") is None:
        done = subprocess.run([str(REPO / ".ci" / "browser")], capture_output=True, text=True)
        if done.returncode != 0 or shutil.which("chromium") is None:
            pytest.fail(f"headless Chromium is needed and could not be installed: {done.stderr.strip()}", pytrace=False)
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """(demo folder, port, API token) of a served demo; stopped at the end whatever happened."""
    demo = tmp_path_factory.mktemp("demo_ui") / "demo"
    assert run_demo(demo, people=1000, seed=5, progress=lambda m: None, source_dags=["rental"]) == 0
    port = _free_port()
    assert serve(demo, port=port, progress=lambda m: None) == 0
    try:
        password = json.loads(password_file(demo).read_text(encoding="utf-8"))["admin"]
        login = urllib.request.Request(
            f"http://127.0.0.1:{port}/auth/token",
            data=json.dumps({"username": "admin", "password": password}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(login, timeout=30) as answer:
            token = json.loads(answer.read())["access_token"]
        yield demo, port, token
    finally:
        stop(demo, progress=lambda m: None)


@pytest.fixture(scope="module")
def page(ui, chromium, tmp_path_factory):
    demo, port, token = ui
    tab = Page(chromium, tmp_path_factory.mktemp("chromium"))
    tab.call("Network.setCookie", name="_token", value=token, url=f"http://127.0.0.1:{port}/")
    yield tab
    tab.close()


@pytest.fixture(scope="module")
def triggered(ui, page) -> dict:
    """A run of the rental DAG triggered from the UI's form with ``as_of`` left blank, once finished."""
    demo, port, token = ui
    page.open(f"http://127.0.0.1:{port}/dags/{SOURCE_DAG}")
    page.text_once(lambda text: "Trigger" in text)
    assert page.click("", "Trigger"), "no Trigger button on the DAG's page"
    form = page.text_once(lambda text: "as_of" in text and "Run Parameters" in text, 30)
    assert "as_of" in form
    required = page.evaluate("document.querySelector('#element_as_of').required")
    blank = page.evaluate("document.querySelector('#element_as_of').value")
    assert page.click("[role=dialog]", "Trigger"), "no Trigger button in the trigger form"
    deadline = time.monotonic() + 30
    while "/runs/" not in (page.evaluate("location.href") or "") and time.monotonic() < deadline:
        time.sleep(0.5)
    run_id = urllib.parse.unquote(page.evaluate("location.href").rsplit("/runs/", 1)[-1].split("/")[0])
    quoted = urllib.parse.quote(run_id, safe="")
    deadline = time.monotonic() + 240
    while (run := _api(port, token, f"dags/{SOURCE_DAG}/dagRuns/{quoted}"))["state"] not in ("success", "failed"):
        assert time.monotonic() < deadline, f"the triggered run is still {run['state']}"
        time.sleep(2)
    return {"run": run, "required": required, "blank": blank}


def test_the_ui_lists_only_zerocerts_dags(ui, page):
    demo, port, token = ui
    page.open(f"http://127.0.0.1:{port}/dags")
    text = page.text_once(lambda text: all(dag in text for dag in DAG_IDS))
    page.screenshot(demo / "ui-dags.png")
    listed = {line.strip() for line in text.splitlines() if re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", line.strip())}
    assert listed == DAG_IDS
    assert f"{len(DAG_IDS)} Dags" in text
    assert "example_" not in text and "tutorial" not in text
    dags = _api(port, token, "dags?limit=200")
    assert dags["total_entries"] == len(DAG_IDS) and {d["dag_id"] for d in dags["dags"]} == DAG_IDS
    assets = _api(port, token, "assets?limit=200")
    staged = {f"zerocert://staged/{d[16:]}" for d in DAG_IDS if "source" in d}
    published = {f"zerocert://warehouse/{table}" for table in PUBLISHED_TABLES}
    assert {a["uri"] for a in assets["assets"]} == staged | published  # ours alone, no example's


def test_a_blank_as_of_from_the_trigger_form_runs_to_success(triggered):
    assert triggered["required"] is False and triggered["blank"] == ""
    assert triggered["run"]["conf"].get("as_of") is None
    assert triggered["run"]["state"] == "success"


def test_a_task_log_opens_in_the_ui_for_a_triggered_run_and_for_the_demos_run(ui, page, triggered):
    demo, port, token = ui
    runs = _api(port, token, f"dags/{SOURCE_DAG}/dagRuns?limit=50")["dag_runs"]
    demos_run = min(runs, key=lambda run: run["start_date"])["dag_run_id"]  # the one `airflow dags test` ran
    for name, run_id in (("triggered", triggered["run"]["dag_run_id"]), ("demo", demos_run)):
        page.open(f"http://127.0.0.1:{port}/dags/{SOURCE_DAG}/runs/{urllib.parse.quote(run_id, safe='')}/tasks/stage")
        text = page.text_once(lambda text: STAGED_LINE.search(text) is not None)
        page.screenshot(demo / f"ui-log-{name}.png")
        staged = STAGED_LINE.search(text)
        assert staged, f"the {name} run's task log shows no staging counts"
        assert int(staged.group(1)) > 0
        assert "Could not read served logs" not in text and "Log file not found" not in text


def test_the_demo_stays_under_its_memory_budget(ui, triggered):
    demo, port, token = ui
    peak = json.loads((demo / MEMORY_FILE).read_text(encoding="utf-8"))
    assert peak["samples"] > 5 and peak["processes_at_peak"] >= 4
    assert 0 < peak["peak_rss_bytes"] < MEMORY_BUDGET


def test_the_stop_command_leaves_no_process(ui, page, triggered, capsys):
    demo, port, token = ui
    group = json.loads((demo / PIDS_FILE).read_text(encoding="utf-8"))["process_group"]
    assert demo_processes(demo)
    assert main(["demo", "--stop", "--out", str(demo)]) == 0
    assert "no process left; peak memory" in capsys.readouterr().out
    in_group = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if entry.name.isdigit() and os.getpgid(int(entry.name)) == group:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    in_group.append(int(entry.name))
    assert in_group == []
    assert demo_processes(demo) == []
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the UI's port still answers"
