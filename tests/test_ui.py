"""The Dagster UI as a user opens it: `dagster dev` on loopback, driven by headless Chromium.

The server tests start the README's `dagster dev` command on a free loopback port with a
fresh smoke home, so nothing is materialised. The page test needs Debian's Chromium at
/usr/bin/chromium and Playwright's Python package. It is skipped when either is missing.
Set WTA_UI_SCREENSHOT to a path to keep a copy of the asset graph screenshot there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.pipeline_fixtures import REPO, subprocess_env
from wta_dagster.partitions import subset_partitions

HOST = "127.0.0.1"
# The arguments of the documented command, before the port. The docs test checks that
# README.md and scripts/ui.sh use the same ones.
DEV_ARGS = ["dev", "-w", "workspace.yaml", "-h", HOST]
DOCUMENTED_COMMAND = "dagster " + " ".join(DEV_ARGS)

ASSETS = ["gtzan_dataset", "base_model", "loo_subsets", "lora_adapters", "trajectories",
          "wta_scores", "validation_report"]
PARTITIONED_ASSETS = ["loo_subsets", "lora_adapters", "trajectories", "wta_scores"]
GENRES = ["chorale", "fiddle", "quartet"]
LOCATION = "wta"
GROUP = "attribution"

CHROMIUM = Path("/usr/bin/chromium")
# Flags for Chromium running as root on a machine without outside network access. Without the
# background-networking flags, Chromium keeps opening connections that the network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# At this size, with the navigation hidden, the group graph fits at a zoom level that draws
# every node in full (checks, partitions, kinds) instead of name-only boxes.
VIEWPORT = {"width": 1600, "height": 800}

# Checked when the tests are collected, so a missing browser skips before the server starts.
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason=f"{CHROMIUM} not found; install Debian's chromium package")
needs_playwright = pytest.mark.skipif(
    importlib.util.find_spec("playwright") is None,
    reason="playwright is not installed; pip install playwright (it drives /usr/bin/chromium, "
           "so no browser download is needed)")

STARTUP_TIMEOUT_S = 180
SHUTDOWN_TIMEOUT_S = 20
PAGE_TIMEOUT_MS = 60_000


@dataclass
class DagsterUi:
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def graphql(url: str, query: str) -> dict:
    """POST one query to the webserver's GraphQL endpoint and return its `data`."""
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
    assert "errors" not in body, f"GraphQL query failed: {body['errors']}"
    return body["data"]


WORKSPACE_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


def wait_until_loaded(ui: DagsterUi) -> None:
    """Wait until the webserver responds and the code location has loaded, or fail with the server log."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    status = "no response yet"
    while time.monotonic() < deadline:
        if ui.process.poll() is not None:
            pytest.fail(f"dagster dev exited with code {ui.process.returncode} during startup:\n{ui.log_tail()}")
        try:
            workspace = graphql(ui.url, WORKSPACE_QUERY)["workspaceOrError"]
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            status = f"webserver not responding: {error}"
        else:
            entries = {entry["name"]: entry for entry in workspace.get("locationEntries", [])}
            entry = entries.get(LOCATION)
            if entry is None:
                status = f"code location {LOCATION!r} not listed; listed: {sorted(entries)}"
            elif entry["loadStatus"] != "LOADED":
                status = f"code location {LOCATION!r} is {entry['loadStatus']}"
            elif entry["locationOrLoadError"]["__typename"] == "PythonError":
                pytest.fail(f"code location {LOCATION!r} failed to load: "
                            f"{entry['locationOrLoadError']['message']}")
            else:
                return
        time.sleep(1)
    pytest.fail(f"dagster dev was not ready after {STARTUP_TIMEOUT_S} s ({status}):\n{ui.log_tail()}")


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop `dagster dev` and every process it started, even when it ignores the request.

    SIGTERM lets `dagster dev` shut its webserver, daemon and code servers down. `dagster dev`
    (1.13) handles SIGTERM with its SIGINT handler, so it ignores SIGTERM when the test was
    started with SIGINT ignored, as in a background job of a non-interactive shell. SIGKILL to
    the whole group then removes whatever is still running.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=SHUTDOWN_TIMEOUT_S)


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory, render_cache) -> Iterator[DagsterUi]:
    """`dagster dev` with the documented arguments over a fresh smoke home on a free port."""
    root = tmp_path_factory.mktemp("ui")
    env = subprocess_env(root / "home", render_cache)
    log_path = root / "dagster-dev.log"
    port = free_port()
    with log_path.open("wb") as log:
        # A new session makes the server the leader of a process group holding everything it
        # starts, so the teardown can stop all of them at once.
        process = subprocess.Popen([sys.executable, "-m", "dagster", *DEV_ARGS, "-p", str(port)],
                                   cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    ui = DagsterUi(port=port, process=process, log_path=log_path)
    try:
        wait_until_loaded(ui)
        yield ui
    finally:
        stop_process_group(process)


@pytest.fixture
def page(tmp_path):
    """A Playwright page in Debian's headless Chromium with a fresh profile."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Twice the pixels per CSS pixel keeps the small node text sharp in the screenshot.
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile", executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport=VIEWPORT, device_scale_factor=2)
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        try:
            yield context.new_page()
        finally:
            context.close()


def dismiss_community_dialog(page, url: str) -> None:
    """Close the one-time "Join the Dagster community" dialog the UI shows on a new instance.

    The webserver reports whether the dialog is due. The UI opens it over the graph about a
    second after the first page loads.
    """
    if graphql(url, "{ shouldShowNux }")["shouldShowNux"]:
        page.get_by_role("dialog").get_by_role("button", name="Skip").click()
        page.get_by_role("dialog").wait_for(state="detached")


@pytest.mark.browser
@needs_chromium
@needs_playwright
def test_asset_graph_shows_assets_and_partitions(dagster_ui, page, tmp_path):
    from playwright.sync_api import expect

    # expect() waits 5 s by default, whatever the context's timeout; a loaded machine needs more.
    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    keys = subset_partitions.get_partition_keys()
    assert set(GENRES) <= set(keys), f"smoke partitions {keys} lack the genres {GENRES}"

    # 1. The asset group's lineage graph, with the navigation hidden so it fits in full.
    page.goto(f"{dagster_ui.url}/locations/{LOCATION}/asset-groups/{GROUP}")
    dismiss_community_dialog(page, dagster_ui.url)
    page.get_by_text("Hide navigation").click()
    page.reload()
    for asset in ASSETS:
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    # Full nodes carry the partition count, so this also waits out the name-only first paint.
    expect(page.get_by_text(f"{len(keys)} partitions", exact=True)).to_have_count(len(PARTITIONED_ASSETS))

    screenshot = tmp_path / "asset_graph.png"
    page.screenshot(path=screenshot)
    assert screenshot.stat().st_size > 10_000, "the asset graph screenshot is nearly empty"
    if os.environ.get("WTA_UI_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["WTA_UI_SCREENSHOT"])

    # 2. The webserver serves the genre partitions of every partitioned asset.
    nodes = graphql(dagster_ui.url, "{ assetNodes { assetKey { path } partitionKeys } }")["assetNodes"]
    served = {"/".join(node["assetKey"]["path"]): node["partitionKeys"] for node in nodes}
    assert set(ASSETS) <= set(served), f"assets missing from the webserver: {set(ASSETS) - set(served)}"
    for asset in PARTITIONED_ASSETS:
        assert served[asset] == keys, f"{asset} partitions {served[asset]} differ from {keys}"

    # 3. The adapters' partitions page lists every key, the genres among them.
    page.goto(f"{dagster_ui.url}/assets/lora_adapters?view=partitions")
    expect(page.get_by_text(f"{len(keys)} Partitions Selected")).to_be_visible()
    for key in keys:
        expect(page.get_by_text(key, exact=True).first).to_be_visible()
    page.screenshot(path=tmp_path / "lora_adapters_partitions.png")

    assert not page_errors, f"uncaught errors in the UI: {page_errors}"


@pytest.mark.browser
def test_webserver_listens_on_loopback_only(dagster_ui):
    listening = [conn for conn in psutil.net_connections(kind="inet")
                 if conn.laddr and conn.laddr.port == dagster_ui.port and conn.status == psutil.CONN_LISTEN]
    assert listening, f"nothing listens on port {dagster_ui.port}"
    addresses = sorted({conn.laddr.ip for conn in listening})
    assert addresses == [HOST], f"port {dagster_ui.port} listens on {addresses}, expected only {HOST}"


def test_docs_start_ui_on_loopback():
    readme = (REPO / "README.md").read_text()
    script = (REPO / "scripts" / "ui.sh").read_text()
    assert f".venv/bin/{DOCUMENTED_COMMAND} -p 3000" in readme, "README lacks the loopback UI command"
    assert f"http://{HOST}:3000" in readme, "README lacks the UI address"
    assert f".venv/bin/{DOCUMENTED_COMMAND} -p" in script, "scripts/ui.sh does not bind the UI to loopback"
    for text, name in ((readme, "README.md"), (script, "scripts/ui.sh")):
        assert "0.0.0.0" not in text, f"{name} binds the UI to every interface"
