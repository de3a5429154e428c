"""Plotly figures as JSON for the pages (drawn by the plotly.min.js the installed plotly package ships)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import plotly.graph_objects as go

LAYOUT = {"margin": {"l": 50, "r": 20, "t": 40, "b": 40}, "height": 320, "template": "plotly_white"}


def reach_curve(rows: list[dict[str, str]]) -> str:
    """Cumulative expected reach against the number of seeds k, the 95% interval as a band."""
    k = [int(r["rank"]) for r in rows]
    low, high = [float(r["ci95_low"]) for r in rows], [float(r["ci95_high"]) for r in rows]
    fig = go.Figure([
        go.Scatter(x=k, y=high, mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip"),
        go.Scatter(x=k, y=low, mode="lines", line={"width": 0}, fill="tonexty", fillcolor="rgba(31,119,180,0.2)",
                   name="95% interval"),
        go.Scatter(x=k, y=[float(r["cumulative_reach"]) for r in rows], mode="lines+markers", name="expected reach"),
    ])
    fig.update_layout(title="Reach vs number of seeds", xaxis_title="seeds k", yaxis_title="expected buyers",
                      **LAYOUT)
    return fig.to_json()


def seeds_per_community(rows: list[dict[str, str]]) -> str:
    counts = Counter(r["community"] for r in rows).most_common()
    fig = go.Figure([go.Bar(x=[f"c{c}" for c, _ in counts], y=[n for _, n in counts])])
    fig.update_layout(title="Seeds per community", xaxis_title="community", yaxis_title="seeds", **LAYOUT)
    return fig.to_json()


def demand_series(name: str, entry: dict[str, Any], starts: list[str]) -> str:
    """One group's share and purchase volumes per period, each with its next-period forecast as a dashed step."""
    fig = go.Figure()
    next_label = "next"
    for kind, colour in (("purchases", "#1f77b4"), ("shares", "#ff7f0e")):
        if kind not in entry:
            continue
        volumes = entry[kind]["volumes"]
        fig.add_scatter(x=starts, y=volumes, mode="lines+markers", name=kind, line={"color": colour})
        fig.add_scatter(x=[starts[-1], next_label], y=[volumes[-1], entry[kind]["next_forecast"]], mode="lines+markers",
                        name=f"{kind} forecast", line={"color": colour, "dash": "dash"})
    fig.update_layout(title=name, xaxis_title="period start", yaxis_title="events", **{**LAYOUT, "height": 260})
    return fig.to_json()
