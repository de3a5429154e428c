"""The growth console in a real browser (Playwright driving Debian's chromium headless) over a real gRPC server
on loopback serving the registry's model of a simulated world: every page loads, the planner's and the
audience's tables match a direct gRPC call, the CSV / JSON exports match the table, a screenshot is taken."""

from __future__ import annotations

import csv
import io
import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
import uvicorn
from conftest import free_port, unavailable

from sharerank.dataset.reader import load_dataset
from sharerank.models.rings import DEFAULT_THRESHOLD as RING_THRESHOLD
from sharerank.serving.online_store import InMemoryOnlineStore
from sharerank.serving.server import Server, create_server
from sharerank.v1 import seeding_service_pb2, seeding_service_pb2_grpc

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory) -> Iterator[Server]:
    settings = registry[0].model_copy(update={"event_log_dir": tmp_path_factory.mktemp("events")})
    server = create_server(settings, InMemoryOnlineStore(), address="127.0.0.1:0")
    yield server
    server.stop(grace=None)


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[seeding_service_pb2_grpc.SeedingServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield seeding_service_pb2_grpc.SeedingServiceStub(channel)


def wait_until(check, what: str, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > end:
            raise TimeoutError(f"{what} within {deadline_s} s")
        time.sleep(0.05)


@contextmanager
def running_console(settings, demand_report=None) -> Iterator[str]:
    """The console app on a free loopback port (uvicorn in a thread) until the block ends."""
    import urllib.request

    from sharerank.console.app import create_app

    port = free_port()
    web = uvicorn.Server(uvicorn.Config(create_app(settings, demand_report), host="127.0.0.1", port=port,
                                       log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return urllib.request.urlopen(f"{base}/healthz", timeout=1).read() == b"ok"
        except OSError:
            return False

    wait_until(answers, "the console to answer")
    try:
        yield base
    finally:
        web.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def console(registry, server: Server, tiny_world: Path) -> Iterator[str]:
    """The console over the loopback server, with a demand report of the world."""
    from sharerank.training.demand.signals import run_demand

    settings = registry[0].model_copy(update={"grpc_target": f"127.0.0.1:{server.port}"})
    with running_console(settings, run_demand(tiny_world)) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not CHROMIUM.exists():
        unavailable(f"no chromium at {CHROMIUM} (`apt-get install -y chromium`; `make test` does it where apt-get "
                    f"is at hand{'' if shutil.which('apt-get') else ', and it is not here'})")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1300, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


def table(page) -> list[list[str]]:
    return [[cell.strip() for cell in row.locator("td").all_inner_texts()]
            for row in page.locator("#results tbody tr").all()]


def test_every_page_loads_with_its_content(page, console: str) -> None:
    page.goto(f"{console}/planner")
    assert page.locator("h1").inner_text() == "Launch planner"
    page.goto(f"{console}/audience")
    assert page.locator("h1").inner_text().startswith("Audience")
    page.goto(f"{console}/demand")
    assert page.locator("#scores tbody tr").count() == 2
    page.wait_for_selector(".demand-chart .main-svg")  # plotly drew, from the locally served plotly.min.js
    page.goto(f"{console}/model")
    assert "sharerank v" in page.locator("#serving-version").inner_text()
    assert page.locator("#metrics tr").count() > 1 and page.locator("#seeding").inner_text()
    assert page.locator("#mlflow").get_attribute("href").startswith("http")


def test_planner_shows_the_services_seeds_and_exports_exactly_the_table(page, console: str, stub,
                                                                         tmp_path: Path) -> None:
    page.goto(f"{console}/planner")
    page.select_option("select[name=target_kind]", "category")
    page.fill("input[name=target]", "Beauty")
    page.fill("input[name=budget]", "6")
    page.fill("input[name=max_per_community]", "2")
    page.select_option("select[name=ring_policy]", "ignore")
    page.click("button[type=submit]")
    page.wait_for_selector("#results tbody tr")
    shown = table(page)
    direct = stub.GetSeedTargets(seeding_service_pb2.GetSeedTargetsRequest(
        category="Beauty", budget=6, max_seeds_per_community=2,
        ring_policy=seeding_service_pb2.RING_POLICY_IGNORE), timeout=120)
    assert [row[1] for row in shown] == [s.user_id for s in direct.seeds]
    assert [row[2] for row in shown] == [s.community for s in direct.seeds]
    for row, seed in zip(shown, direct.seeds, strict=True):
        assert float(row[4]) == pytest.approx(seed.cumulative_reach, abs=0.006)
        # Each seed's trust: spammer score with its interval, the audience's fatigue, the ring flag.
        score, interval = row[7].split(" ", 1)
        assert float(score) == pytest.approx(seed.spammer_score, abs=0.006)
        low, high = (float(x) for x in interval.strip("[]").split("–"))
        assert low <= float(score) <= high
        assert float(row[8]) == pytest.approx(seed.audience_fatigue, abs=0.006)
        assert row[9] == ("" if seed.ring_score < RING_THRESHOLD else f"ring {seed.ring_score:.2f}")
    page.wait_for_selector("#reach-chart .main-svg")
    page.wait_for_selector("#community-chart .main-svg")
    with page.expect_download() as download:
        page.click("#export-csv")
    exported = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
    assert exported[0][:2] == ["rank", "user_id"] and exported[1:] == shown
    with page.expect_download() as download:
        page.click("#export-json")
    as_json = json.loads(Path(download.value.path()).read_text())
    assert [list(row.values()) for row in as_json["rows"]] == shown
    assert as_json["expected_reach"] in page.locator("#summary").inner_text()
    shot = tmp_path / "planner.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_users_excluded_by_csv_upload_are_not_seeds(page, console: str, tmp_path: Path) -> None:
    page.goto(f"{console}/planner")
    page.fill("input[name=target]", "Beauty")
    page.fill("input[name=budget]", "4")
    page.click("button[type=submit]")
    page.wait_for_selector("#results tbody tr")
    first = [row[1] for row in table(page)]
    upload = tmp_path / "exclude.csv"
    upload.write_text("user_id\n" + "\n".join(first[:2]) + "\n")
    page.set_input_files("input[name=exclude_file]", str(upload))
    page.click("button[type=submit]")
    page.wait_for_function("document.querySelector('#summary') && "
                           "document.querySelector('#summary').innerText.includes('2 users excluded')")
    again = [row[1] for row in table(page)]
    assert len(again) == 4 and not set(first[:2]) & set(again)


def test_a_refused_request_shows_the_services_reason(page, console: str) -> None:
    page.goto(f"{console}/planner")
    page.fill("input[name=target]", "Garden gnomes")
    page.click("button[type=submit]")
    page.wait_for_selector("#problem")
    assert "NOT_FOUND · UNKNOWN_CATEGORY" in page.locator("#problem").inner_text()
    assert page.locator("#results").count() == 0


def test_audience_page_matches_the_service_and_its_csv(page, console: str, stub, tiny_world: Path) -> None:
    world = load_dataset(tiny_world)
    product = str(world.products[int(np.argmax(np.bincount(world.purchases.product)))])
    page.goto(f"{console}/audience")
    page.fill("input[name=product_id]", product)
    page.fill("input[name=k]", "25")
    page.click("button[type=submit]")
    page.wait_for_selector("#results tbody tr")
    shown = table(page)
    direct = stub.GetAudience(seeding_service_pb2.GetAudienceRequest(product_id=product, k=25), timeout=30)
    assert [row[1] for row in shown] == [m.user_id for m in direct.members]
    assert [row[3] for row in shown] == ["; ".join(r.text for r in m.reasons) for m in direct.members]
    with page.expect_download() as download:
        page.click("#export-csv")
    exported = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
    assert exported[0] == ["rank", "user_id", "score", "reasons"] and exported[1:] == shown


def test_with_auth_on_the_console_plans_with_its_growth_token_and_cannot_read_admin_state(
        page, registry, tmp_path: Path) -> None:
    settings = registry[0].model_copy(update={"auth_tokens": {"grow-t0ken": "growth", "adm-t0ken": "admin"},
                                              "event_log_dir": tmp_path / "events"})
    guarded = create_server(settings, InMemoryOnlineStore(), address="127.0.0.1:0")
    try:
        client = settings.model_copy(update={"grpc_target": f"127.0.0.1:{guarded.port}",
                                             "console_token": "grow-t0ken"})
        with running_console(client) as base:
            page.goto(f"{base}/planner")
            page.fill("input[name=target]", "Beauty")
            page.fill("input[name=budget]", "3")
            page.click("button[type=submit]")
            page.wait_for_selector("#results tbody tr")
            assert len(table(page)) == 3
            page.goto(f"{base}/model")
            assert "PERMISSION_DENIED" in page.locator("#serving").inner_text()
        with running_console(client.model_copy(update={"console_token": None})) as base:
            page.goto(f"{base}/planner")
            page.fill("input[name=target]", "Beauty")
            page.click("button[type=submit]")
            page.wait_for_selector("#problem")
            assert "UNAUTHENTICATED" in page.locator("#problem").inner_text()
    finally:
        guarded.stop(grace=None)
