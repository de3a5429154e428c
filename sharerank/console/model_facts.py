"""The model page's registry side: the served version's training run (metrics, how influence was learned)."""

from __future__ import annotations

from typing import Any

from sharerank.config import Settings


def model_facts(settings: Settings, version: str | None) -> dict[str, Any]:
    """Metrics, influence tag and params of ``version``'s training run (the champion when None); ``error`` says
    why there are none (no registry, no such version)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from sharerank.registry import connect, resolve_alias

    try:
        connect(settings)
        version = version or resolve_alias(settings)
        if version is None:
            return {"error": f"no version carries the alias {settings.alias!r}"}
        client = MlflowClient()
        registered = client.get_model_version(settings.model_name, version)
        run = client.get_run(registered.run_id)
    except MlflowException as exc:
        return {"error": " ".join(str(exc).split())[:300]}
    data = run.data
    return {"version": version, "run_id": registered.run_id,
            "metrics": {k: round(v, 4) for k, v in sorted(data.metrics.items())},
            "model_type": data.params.get("model_type") or data.tags.get("model_type", ""),
            "seeding": {"influence_regime": data.tags.get("influence_regime", "none (no influence model)"),
                        **{k.removeprefix("influence_"): v for k, v in sorted(data.params.items())
                           if k.startswith("influence_")}},
            "tracking_uri": settings.resolved_tracking_uri}
