"""Serving products the model never saw: each gets its category's prior embedding until the next training."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from sharerank.models.artifact.bundle import ModelBundle


def apply_catalogue(bundle: ModelBundle, products: np.ndarray, category: np.ndarray, seller: np.ndarray,
                    in_stock: np.ndarray) -> ModelBundle:
    """A new bundle that also serves the catalogue's products ``bundle`` does not know; ``bundle`` is untouched.

    A new product's embedding is its category's prior: the mean embedding of the bundle's products of that
    category (the catalogue-wide mean for a category the model has never seen), so it ranks where its
    category does until the next training learns it. It joins the index, has no purchases (long tail), and
    serves with a ``CATEGORY_PRIOR`` reason. Products the bundle knows keep their trained data.
    """
    known = bundle.product_rows
    new = np.fromiter((p not in known for p in products.tolist()), dtype=bool, count=len(products))
    if not new.any():
        return bundle
    names, codes = np.unique(bundle.category.astype(str), return_inverse=True)
    codes = codes.reshape(-1)
    one_hot = sp.csr_matrix((np.ones(len(codes), dtype=np.float32), (codes, np.arange(len(codes)))),
                            shape=(len(names), len(codes)))
    means = np.asarray(one_hot @ bundle.product_embedding) / np.bincount(codes, minlength=len(names))[:, None]
    overall = bundle.product_embedding.mean(axis=0)
    prior = {name: means[i] for i, name in enumerate(names.tolist())}
    embedding = np.stack([prior.get(c, overall) for c in category[new].astype(str).tolist()]).astype(np.float32)
    return bundle.with_products(products[new], category[new], seller[new], in_stock[new], embedding)
