"""Training loop for the embedding models: BPR over full-graph propagation, early-stopped on validation.

Every optimisation step propagates the whole graph once (a sparse CSR matmul per layer), then scores a
mini-batch of (user, bought product, random product) triples. The loop is model-agnostic through
:class:`EmbeddingModel`; callbacks receive each epoch's figures so MLflow (or a progress bar) sees
them as they happen.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from sharerank.models.lightgcn import LightGCN
from sharerank.models.propagation import bipartite_adjacency
from sharerank.training.dataset import Dataset
from sharerank.training.graph import PURCHASED, build_graph, interaction_matrix
from sharerank.training.metrics import evaluate_ranking, rank_top_k
from sharerank.training.split import Split

log = logging.getLogger(__name__)


class EmbeddingModel(Protocol):
    """What the loop needs of a model: ego embedding tables, final embeddings from the graph, a loss."""

    user_embedding: torch.nn.Embedding
    product_embedding: torch.nn.Embedding

    def forward(self, adj: Tensor) -> tuple[Tensor, Tensor]: ...

    def recommendation_loss(self, user_emb: Tensor, pos_emb: Tensor, neg_emb: Tensor, ego_user: Tensor,
                            ego_pos: Tensor, ego_neg: Tensor, reg_weight: float) -> Tensor: ...


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (all logged to MLflow as params)."""

    model: str = "lightgcn"
    embedding_dim: int = 64
    num_layers: int = 3
    epochs: int = 50
    batch_size: int = 4096
    lr: float = 5e-3
    reg_weight: float = 1e-4
    patience: int = 5  # epochs without a better validation Recall@20 before stopping
    max_seconds: float | None = None  # wall-clock budget for the whole loop
    seed: int = 0


@dataclass
class TrainResult:
    """The trained model at its best validation epoch, with its embeddings and the epoch history."""

    model: torch.nn.Module
    user_embedding: np.ndarray
    product_embedding: np.ndarray
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def seconds_per_epoch(self) -> float:
        times = [h["epoch_seconds"] for h in self.history]
        return float(np.median(times)) if times else float("nan")


MODELS: dict[str, Callable[[int, int, TrainConfig], EmbeddingModel]] = {
    "lightgcn": lambda u, p, c: LightGCN(u, p, embedding_dim=c.embedding_dim, num_layers=c.num_layers),
}


def sample_negatives(users: np.ndarray, bought: sp.csr_matrix, rng: np.random.Generator,
                     max_rounds: int = 20) -> np.ndarray:
    """One uniformly random product per user that the user did not buy (rejection sampling, vectorised)."""
    num_products = bought.shape[1]
    neg = rng.integers(0, num_products, size=len(users))
    pending = np.arange(len(users))
    for _ in range(max_rounds):
        hit = np.asarray(bought[users[pending], neg[pending]]).ravel() > 0
        pending = pending[hit]
        if len(pending) == 0:
            break
        neg[pending] = rng.integers(0, num_products, size=len(pending))
    return neg


def train_model(dataset: Dataset, split: Split, config: TrainConfig,
                on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Trains ``config.model`` on ``split.train``; keeps the epoch with the best validation Recall@20.

    Without validation interactions the last epoch is kept.
    """
    if config.model not in MODELS:
        raise ValueError(f"unknown model {config.model!r}; choose one of {sorted(MODELS)}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    num_users, num_products = dataset.num_users, dataset.num_products
    graph = build_graph(dataset, split.train)
    users, products = graph[PURCHASED].edge_index
    adj = bipartite_adjacency(users, products, num_users, num_products)
    users, products = users.numpy(), products.numpy()
    bought = interaction_matrix(split.train, num_users, num_products)
    valid_matrix = interaction_matrix(split.valid, num_users, num_products)
    valid_users = np.flatnonzero(np.diff(valid_matrix.indptr))

    model = MODELS[config.model](num_users, num_products, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    best = (-1.0, 0, copy.deepcopy(model.state_dict()))
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        loss = _train_epoch(model, optimizer, adj, users, products, bought, config, rng)
        figures = {"loss": loss, "epoch_seconds": time.perf_counter() - t0}
        if len(valid_users):
            user_emb, product_emb = _embeddings(model, adj)
            top = rank_top_k(user_emb, product_emb, torch.from_numpy(valid_users), bought, 20)
            scores = evaluate_ranking(top, valid_matrix, valid_users, num_products,
                                      np.asarray(bought.sum(axis=0)).ravel(), ks=(20,))
            figures["val_recall_20"] = scores["Recall@20"]
            figures["val_ndcg_20"] = scores["NDCG@20"]
            if scores["Recall@20"] > best[0]:
                best = (scores["Recall@20"], epoch, copy.deepcopy(model.state_dict()))
        else:
            best = (-1.0, epoch, copy.deepcopy(model.state_dict()))
        history.append(figures)
        if on_epoch is not None:
            on_epoch(epoch, figures)
        log.info("epoch %d %s", epoch, {k: round(v, 5) for k, v in figures.items()})
        if epoch - best[1] >= config.patience:
            log.info("early stop at epoch %d (best %d)", epoch, best[1])
            break
        if config.max_seconds is not None and time.perf_counter() - started > config.max_seconds:
            log.info("time budget of %.0f s spent at epoch %d", config.max_seconds, epoch)
            break
    model.load_state_dict(best[2])
    user_emb, product_emb = _embeddings(model, adj)
    return TrainResult(model, user_emb.numpy(), product_emb.numpy(), best_epoch=best[1], history=history)


def _train_epoch(model: EmbeddingModel, optimizer: torch.optim.Optimizer, adj: Tensor, users: np.ndarray,
                 products: np.ndarray, bought: sp.csr_matrix, config: TrainConfig,
                 rng: np.random.Generator) -> float:
    model.train()
    order = rng.permutation(len(users))
    negatives = sample_negatives(users[order], bought, rng)
    total, batches = 0.0, 0
    for start in range(0, len(order), config.batch_size):
        idx = order[start:start + config.batch_size]
        u = torch.from_numpy(users[idx])
        pos = torch.from_numpy(products[idx])
        neg = torch.from_numpy(negatives[start:start + config.batch_size])
        user_emb, product_emb = model(adj)
        ego_user, ego_product = model.user_embedding.weight, model.product_embedding.weight
        loss = model.recommendation_loss(user_emb[u], product_emb[pos], product_emb[neg], ego_user[u],
                                         ego_product[pos], ego_product[neg], reg_weight=config.reg_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()
        batches += 1
    return total / max(batches, 1)


@torch.no_grad()
def _embeddings(model: torch.nn.Module, adj: Tensor) -> tuple[Tensor, Tensor]:
    model.eval()
    return model(adj)
