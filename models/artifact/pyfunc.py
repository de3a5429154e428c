"""The registered MLflow model: a pyfunc wrapping a :class:`~sharerank.models.artifact.bundle.ModelBundle`.

MLflow stores the bundle folder as the model's artifact; ``load_context`` reads it once. Serving
unwraps the python model to reach the bundle; ``predict`` gives anyone with the registry the same top-k
lists (bought products excluded) without the server.
"""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from sharerank.dataset.schema import RECOMMENDATIONS
from sharerank.models.artifact.bundle import ModelBundle

BUNDLE_ARTIFACT = "bundle"
PIP_REQUIREMENTS = ["sharerank", "faiss-cpu", "numpy", "scipy", "pandas"]
"""What loading the model needs, given explicitly (MLflow would otherwise import it in a subprocess to guess)."""
SIGNATURE = mlflow.models.ModelSignature(
    inputs=Schema([ColSpec("string", "user_id")]),
    outputs=Schema([ColSpec("string", "user_id"), ColSpec("string", "product_id"), ColSpec("long", "rank"),
                    ColSpec("double", "score")]),
    params=ParamSchema([ParamSpec("k", "long", 20)]),
)


class SharerankPyfunc(mlflow.pyfunc.PythonModel):
    """Top-k products per user from the bundle: its vectors in FAISS and its item-item part."""

    bundle: ModelBundle

    def load_context(self, context) -> None:
        self.bundle = ModelBundle.load(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """``model_input`` has a ``user_id`` column; ``params={"k": 20}``. Unknown users get popular
        products. Returns ``user_id, product_id, rank, score``."""
        k = int((params or {}).get("k", 20))
        bundle, rows = self.bundle, []
        for user_id in model_input["user_id"].astype(str):
            row = bundle.user_rows.get(user_id)
            if row is None:
                top, scores = bundle.top_products(None, np.empty(0, dtype=np.int64), k)
            else:
                top, scores = bundle.top_products(bundle.user_embedding[row], bundle.bought(row), k)
            ranked = enumerate(zip(top, scores, strict=True), start=1)
            rows += [(user_id, bundle.products[p], rank, float(s)) for rank, (p, s) in ranked]
        return pd.DataFrame(rows, columns=list(RECOMMENDATIONS.columns()))


# Logged as "models from code": MLflow runs this file at load time and serves the object set here.
mlflow.models.set_model(SharerankPyfunc())
