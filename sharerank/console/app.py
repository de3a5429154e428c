"""The console's pages (FastAPI, Jinja2 templates rendered on the server): launch planner, audience, demand and
model. Every result a page shows is kept under an id so its CSV / JSON export is that same result."""

from __future__ import annotations

import json
from collections import OrderedDict
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any
from uuid import uuid4

import grpc
import plotly
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from sharerank.client import AdminClient, InvalidArgument, SeedingClient, SharerankError
from sharerank.config import Settings
from sharerank.console import charts, views
from sharerank.console.model_facts import model_facts
from sharerank.v1 import seeding_service_pb2

RING_POLICIES = ("exclude", "discount", "ignore")
"""What the planner may ask seeding to do with collusive-ring members (GetSeedTargetsRequest.ring_policy)."""
KEPT_RESULTS = 200
"""Results kept for export (the oldest dropped first)."""
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


class Results:
    """The last :data:`KEPT_RESULTS` results shown, by id."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def put(self, result: dict[str, Any]) -> str:
        key = uuid4().hex
        self._items[key] = result
        while len(self._items) > KEPT_RESULTS:
            self._items.popitem(last=False)
        return key

    def get(self, key: str, kind: str) -> dict[str, Any]:
        result = self._items.get(key)
        if result is None or result["kind"] != kind:
            raise HTTPException(404, "no such result (results are kept for the last 200 requests)")
        return result


def create_app(settings: Settings, demand_report: dict[str, Any] | None = None,
               mlflow_url: str = "http://127.0.0.1:5000") -> FastAPI:
    """The console over the service at ``settings.grpc_target``; ``demand_report`` is what ``sharerank demand``
    printed (the demand page says how to make one when None)."""
    app = FastAPI(title="sharerank growth console", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(files("sharerank.console") / "templates"))
    # The console's own token (a growth or admin role), not a storefront's SHARERANK_CLIENT_TOKEN.
    seeding = SeedingClient(token=settings.console_token, settings=settings)
    admin = AdminClient(token=settings.console_token, settings=settings)
    results = Results()
    app.router.on_shutdown.extend((seeding.close, admin.close))

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"target": settings.grpc_target, **context},
                                          status_code=status)

    @app.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse("/planner", status_code=303)

    @app.get("/static/plotly.min.js")
    def plotly_js() -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="application/javascript")

    @app.get("/planner", response_class=HTMLResponse)
    def planner(request: Request) -> HTMLResponse:
        return page(request, "planner.html", form={})

    @app.post("/planner", response_class=HTMLResponse)
    async def plan(request: Request, target_kind: Annotated[str, Form()], target: Annotated[str, Form()],
                   budget: Annotated[int, Form()], exclude: Annotated[str, Form()] = "",
                   exclude_file: Annotated[UploadFile | None, File()] = None,
                   min_activity: Annotated[int, Form()] = 0, max_per_community: Annotated[int, Form()] = 0,
                   max_fatigue: Annotated[str, Form()] = "", ring_policy: Annotated[str, Form()] = "exclude"):
        upload = await exclude_file.read() if exclude_file is not None else None
        excluded = views.parse_user_ids(exclude, upload)
        form = {"target_kind": target_kind, "target": target, "budget": budget, "exclude": exclude,
                "min_activity": min_activity, "max_per_community": max_per_community, "max_fatigue": max_fatigue,
                "ring_policy": ring_policy}
        fields = {"product_id" if target_kind == "product" else "category": target.strip()}
        if max_fatigue.strip():  # unset: no limit (the service checks the value)
            try:
                fields["max_fatigue"] = float(max_fatigue)
            except ValueError:
                problem = InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT,
                                          f"max fatigue must be a number in [0, 1], got {max_fatigue[:32]!r}",
                                          reason="BAD_MAX_FATIGUE")
                return page(request, "planner.html", status=400, form=form, problem=problem)
        policy = seeding_service_pb2.RingPolicy.Value(f"RING_POLICY_{ring_policy.upper()}") \
            if ring_policy in RING_POLICIES else seeding_service_pb2.RING_POLICY_UNSPECIFIED
        try:
            response = seeding.seed_targets(budget, **fields, exclude_user_ids=excluded, min_activity=min_activity,
                                            max_seeds_per_community=max_per_community, ring_policy=policy)
        except SharerankError as problem:
            return page(request, "planner.html", status=400, form=form, problem=problem)
        rows = views.seed_rows(response)
        shown = {"kind": "plan", **views.summary(response, {**form, "excluded": len(excluded)}), "rows": rows}
        key = results.put(shown)
        return page(request, "planner.html", form=form, result=shown, key=key, columns=views.SEED_COLUMNS,
                    reach_chart=charts.reach_curve(rows), community_chart=charts.seeds_per_community(rows))

    @app.get("/planner/{key}.csv")
    def plan_csv(key: str) -> Response:
        shown = results.get(key, "plan")
        return _download(views.to_csv(views.SEED_COLUMNS, shown["rows"]), f"seeds-{key[:8]}.csv", "text/csv")

    @app.get("/planner/{key}.json")
    def plan_json(key: str) -> Response:
        shown = {k: v for k, v in results.get(key, "plan").items() if k != "kind"}
        return _download(json.dumps(shown, indent=2), f"seeds-{key[:8]}.json", "application/json")

    @app.get("/audience", response_class=HTMLResponse)
    def audience_form(request: Request) -> HTMLResponse:
        return page(request, "audience.html", form={})

    @app.post("/audience", response_class=HTMLResponse)
    async def audience(request: Request, product_id: Annotated[str, Form()], k: Annotated[int, Form()],
                       exclude: Annotated[str, Form()] = "",
                       exclude_file: Annotated[UploadFile | None, File()] = None):
        upload = await exclude_file.read() if exclude_file is not None else None
        excluded = views.parse_user_ids(exclude, upload)
        form = {"product_id": product_id, "k": k, "exclude": exclude}
        try:
            response = seeding.audience(product_id.strip(), k, exclude_user_ids=excluded)
        except SharerankError as problem:
            return page(request, "audience.html", status=400, form=form, problem=problem)
        shown = {"kind": "audience", "request": {**form, "excluded": len(excluded)},
                 "model_version": response.model_version, "warnings": list(response.warnings),
                 "rows": views.audience_rows(response)}
        key = results.put(shown)
        return page(request, "audience.html", form=form, result=shown, key=key, columns=views.AUDIENCE_COLUMNS)

    @app.get("/audience/{key}.csv")
    def audience_csv(key: str) -> Response:
        shown = results.get(key, "audience")
        return _download(views.to_csv(views.AUDIENCE_COLUMNS, shown["rows"]), f"audience-{key[:8]}.csv", "text/csv")

    @app.get("/demand", response_class=HTMLResponse)
    def demand(request: Request) -> HTMLResponse:
        if demand_report is None:
            return page(request, "demand.html", report=None)
        from datetime import UTC, datetime

        starts = [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d") for t in demand_report["period_starts"]]
        figures = {f"{group}: {name}": charts.demand_series(f"{group} {name}", entry, starts)
                   for group, key in (("category", "categories"), ("community", "communities"))
                   for name, entry in demand_report[key].items()}
        return page(request, "demand.html", report=demand_report, figures=figures)

    @app.get("/model", response_class=HTMLResponse)
    def model(request: Request) -> HTMLResponse:
        try:
            info, problem = admin.model_info(), None
        except SharerankError as refused:
            info, problem = None, refused
        facts = model_facts(settings, info.model_version if info is not None else None)
        return page(request, "model.html", info=info, problem=problem, facts=facts, mlflow_url=mlflow_url)

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    return app


def _download(body: str, filename: str, media_type: str) -> Response:
    return Response(body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'})
