"""Page load times of the growth console over a served world (default 100k users), in headless chromium.

Simulates the world, trains one model (item-kNN by default: the point is the console, not the model), registers
and serves it over loopback gRPC, starts the console, then times in the browser, each ``--repeats`` times: the
planner form, a seed plan (submit until the table is drawn), the audience of the most bought product, the
demand page (a ``sharerank demand`` report of the world) and the model page. Prints min / median / max seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import uvicorn

sys.path.insert(0, str(Path(__file__).parent))
from report import emit, log  # noqa: E402

from sharerank.config import Settings  # noqa: E402
from sharerank.console.app import create_app  # noqa: E402
from sharerank.dataset.reader import load_dataset  # noqa: E402
from sharerank.registry import promote  # noqa: E402
from sharerank.serving.online_store import InMemoryOnlineStore  # noqa: E402
from sharerank.serving.server import create_server  # noqa: E402
from sharerank.training.demand.signals import run_demand  # noqa: E402
from sharerank.training.jobs import run_training  # noqa: E402
from sharerank.training.sources.simulate import simulate_world  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--model", default="itemknn")
    parser.add_argument("--budget", type=int, default=50, help="seeds per plan")
    parser.add_argument("--audience", type=int, default=100, help="users per audience")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshot", type=Path, help="also save the last seed plan's page as a PNG here")
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(home=root / "home", reload_poll_seconds=0, metrics_port=0, event_log_dir=root / "events")
        started = time.perf_counter()
        simulate_world(root / "world", users=args.users, seed=0)
        log(f"simulated {args.users} users in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        report = run_training([root / "world"], settings, model=args.model)
        promote(settings, report["version"], force=True)
        train_s = time.perf_counter() - started
        log(f"trained {args.model} in {train_s:.0f} s")
        world = load_dataset(root / "world")
        category = str(world.category[np.argmax(np.bincount(world.shares.product, minlength=world.num_products))])
        product = str(world.products[np.argmax(np.bincount(world.purchases.product))])
        started = time.perf_counter()
        demand = run_demand(root / "world")
        demand_s = time.perf_counter() - started
        server = create_server(settings, InMemoryOnlineStore(), address="127.0.0.1:0")
        console = settings.model_copy(update={"grpc_target": f"127.0.0.1:{server.port}"})
        web = uvicorn.Server(uvicorn.Config(create_app(console, demand), host="127.0.0.1", port=0,
                                           log_level="warning"))
        thread = threading.Thread(target=web.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not (web.started and web.servers):
            if time.monotonic() > deadline:
                raise TimeoutError("the console did not start within 60 s")
            time.sleep(0.05)
        base = f"http://127.0.0.1:{web.servers[0].sockets[0].getsockname()[1]}"
        assert urllib.request.urlopen(f"{base}/healthz").read() == b"ok"
        timings: dict[str, list[float]] = {}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, headless=True,
                                                 args=["--no-sandbox", "--disable-dev-shm-usage"])
            page = browser.new_page()
            page.set_default_timeout(600_000)

            def timed(name: str, action) -> None:
                begun = time.perf_counter()
                action()
                timings.setdefault(name, []).append(time.perf_counter() - begun)

            def plan() -> None:
                page.fill("input[name=target]", category)
                page.fill("input[name=budget]", str(args.budget))
                page.click("button[type=submit]")
                page.wait_for_selector("#reach-chart .main-svg")

            def audience() -> None:
                page.fill("input[name=product_id]", product)
                page.fill("input[name=k]", str(args.audience))
                page.click("button[type=submit]")
                page.wait_for_selector("#results tbody tr")

            for repeat in range(args.repeats):
                timed("planner_form", lambda: page.goto(f"{base}/planner", wait_until="load"))
                timed(f"seed_plan_k{args.budget}", plan)
                page.goto(f"{base}/audience")
                timed(f"audience_k{args.audience}", audience)
                timed("demand_page", lambda: (page.goto(f"{base}/demand", wait_until="load"),
                                              page.wait_for_selector(".demand-chart .main-svg")))
                timed("model_page", lambda: page.goto(f"{base}/model", wait_until="load"))
                log(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in timings.items()))
            if args.screenshot is not None:
                page.set_viewport_size({"width": 1280, "height": 900})
                page.goto(f"{base}/planner")
                page.fill("input[name=max_per_community]", "3")
                plan()
                page.screenshot(path=str(args.screenshot), full_page=True)
            browser.close()
        web.should_exit = True
        thread.join(timeout=10)
        server.stop(grace=None)
    emit({"users": args.users, "products": int(world.num_products), "model": args.model, "category": category,
          "train_seconds": round(train_s, 1), "demand_report_seconds": round(demand_s, 1),
          "pages": {name: {"min": round(min(v), 3), "median": round(statistics.median(v), 3),
                           "max": round(max(v), 3)} for name, v in timings.items()},
          "repeats": args.repeats}, args.out_json)


if __name__ == "__main__":
    main()
