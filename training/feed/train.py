"""Training loop for the embedding models: BPR over full-graph propagation, early-stopped on validation.

Every optimisation step propagates the whole graph once (a sparse CSR matmul per layer), then scores a
mini-batch of (user, bought product, random product) triples. The loop is model-agnostic through
:class:`EmbeddingModel`; callbacks receive each epoch's figures so MLflow (or a progress bar) sees
them as they happen.

Under torchrun (a process group from :mod:`~sharerank.training.feed.distributed`) every rank runs the same loop
with the same seed, so the same shuffles and negatives; each global batch of ``batch_size`` rows is split into
one shard per rank, and :class:`~torch.nn.parallel.DistributedDataParallel` averages the shards' gradients,
which is the gradient of the whole batch's mean loss: the optimisation single-process training runs. Rank 0
alone validates and decides when to stop; the others follow its broadcast decision.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from sharerank import progress
from sharerank.dataset.reader import Dataset
from sharerank.models.recommenders.graph import PURCHASED, build_graph, interaction_matrix
from sharerank.models.recommenders.registry import model_names, spec
from sharerank.training.feed import distributed
from sharerank.training.feed.metrics import evaluate_ranking, rank_top_k
from sharerank.training.feed.split import Split

log = logging.getLogger(__name__)


class GraphModel(Protocol):
    """What the loop needs of a model.

    ``prepare`` turns the training graph into whatever ``forward`` propagates over (normalised sparse
    matrices, built once); ``forward`` gives the final user and product embeddings; ``loss`` scores one
    mini-batch of users, their bought products and ``num_negatives`` sampled products per row.
    """

    def prepare(self, graph: HeteroData) -> Any: ...

    def forward(self, inputs: Any) -> tuple[Tensor, Tensor]: ...

    def loss(self, inputs: Any, users: Tensor, pos: Tensor, neg: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (all logged to MLflow as params)."""

    model: str = "lightgcn"
    embedding_dim: int = 64
    num_layers: int = 3
    epochs: int = 50
    batch_size: int | None = 4096  # None: from the data, :func:`batch_size_for`
    lr: float = 5e-3
    reg_weight: float = 1e-4
    num_negatives: int = 1  # sampled non-bought products per positive pair
    patience: int = 5  # epochs without a better validation Recall@20 before stopping
    max_seconds: float | None = None  # wall-clock budget for the whole loop
    seed: int = 0
    model_params: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments of the model


@dataclass
class TrainResult:
    """The trained model at its best validation epoch, with its embeddings and the epoch history."""

    model: torch.nn.Module
    user_embedding: np.ndarray
    product_embedding: np.ndarray
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    batch_size: int = 0  # what the loop ran with (``TrainConfig.batch_size`` resolved)

    @property
    def seconds_to_best(self) -> float:
        """Training seconds until the end of the best validation epoch (its validation included)."""
        return float(sum(h["epoch_seconds"] + h.get("validation_seconds", 0.0) for h in self.history[:self.best_epoch]))

    @property
    def seconds_per_epoch(self) -> float:
        times = [h["epoch_seconds"] for h in self.history]
        return float(np.median(times)) if times else float("nan")


def build_model(num_users: int, num_products: int, config: TrainConfig) -> GraphModel:
    """A fresh graph model of ``config.model`` (a trainable entry of the model registry).

    Raises:
        ValueError: unknown or not trainable model.
    """
    entry = spec(config.model)
    if not entry.trainable:
        raise ValueError(f"{config.model} is not trained by the epoch loop; trainable models: "
                         f"{', '.join(model_names(trainable=True))}")
    return entry.load()(num_users, num_products, embedding_dim=config.embedding_dim, num_layers=config.num_layers,
                        reg_weight=config.reg_weight, **config.model_params)


DEFAULT_CONFIGS: dict[str, TrainConfig] = {
    "lightgcn": TrainConfig(model="lightgcn", epochs=100, patience=8),
    # Sampled softmax at temperature 0.15 converges in ~20 epochs on LastFM (BPR needs hundreds). The learned
    # popularity prior lifted Ciao's validation Recall@20 from 0.045 (7 epochs) to 0.070 (6 epochs) and
    # LastFM's from 0.233 to 0.255 at epoch 11. Batches that grow with the data with a pool of 2048 negatives
    # and lr 1e-2 (from 8192 / 8192 / 5e-3), on validation: LastFM 0.2614 vs 0.2588 (1.6 s vs 3.3 s per epoch),
    # Ciao 0.0665 vs 0.0666 (8.9 s vs 20.7 s), Gowalla after 240 s 0.1989 vs 0.1921 (17 s vs 48 s); patience 10
    # as validated (LastFM's best epoch at lr 1e-2 is ~20, after a plateau from epoch 7).
    "sharegnn": TrainConfig(model="sharegnn", epochs=40, patience=10, batch_size=None, lr=1e-2,
                            model_params={"temperature": 0.15, "popularity_weight": 1.0, "pool_size": 2048}),
}


def batch_size_for(purchases: int) -> int:
    """The smallest power of two that makes an epoch at most 64 steps, within [2048, 16384]: LastFM (74k
    purchases) 2048, Ciao (284k) 8192, Gowalla (810k) 16384. A step propagates the whole graph, so bigger data
    wants bigger batches; chosen on validation splits (LastFM: 0.2612 at 2048 against 0.2588 at 8192, in half
    the time; Gowalla: 0.1989 against 0.1921 after 240 s, 17 s per epoch against 48 s)."""
    return int(np.clip(2 ** math.ceil(math.log2(max(purchases, 1) / 64)), 2048, 16384))


def default_config(model: str) -> TrainConfig:
    """The tuned configuration of ``model`` (what ``sharerank eval`` uses unless told otherwise)."""
    return DEFAULT_CONFIGS.get(model, TrainConfig(model=model))


def sample_negatives(users: np.ndarray, bought: sp.csr_matrix, rng: np.random.Generator, num: int = 1,
                     max_rounds: int = 20) -> np.ndarray:
    """``num`` uniformly random products per user that the user did not buy, shape ``(len(users), num)``
    (rejection sampling, vectorised)."""
    num_products = bought.shape[1]
    rows = np.repeat(users, num)
    neg = rng.integers(0, num_products, size=len(rows))
    pending = np.arange(len(rows))
    for _ in range(max_rounds):
        hit = np.asarray(bought[rows[pending], neg[pending]]).ravel() > 0
        pending = pending[hit]
        if len(pending) == 0:
            break
        neg[pending] = rng.integers(0, num_products, size=len(pending))
    return neg.reshape(len(users), num)


def train_model(dataset: Dataset, split: Split, config: TrainConfig,
                on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Trains ``config.model`` on ``split.train``; keeps the epoch with the best validation Recall@20.

    Without validation interactions the last epoch is kept. Each epoch is a step of a progress stage, with its
    loss and validation Recall@20.
    """
    with progress.stage(f"{config.model} epochs", config.epochs, each_step=True, unit="epochs at most") as shown:

        def epoch_done(epoch: int, figures: dict[str, float]) -> None:
            shown.advance(note=_epoch_note(figures))
            if on_epoch is not None:
                on_epoch(epoch, figures)

        return _train_model(dataset, split, config, epoch_done)


def _epoch_note(figures: dict[str, float]) -> str:
    recall = f" val_recall@20 {figures['val_recall_20']:.4f}" if "val_recall_20" in figures else ""
    return f"loss {figures['loss']:.4f}{recall}"


def _train_model(dataset: Dataset, split: Split, config: TrainConfig,
                 on_epoch: Callable[[int, dict[str, float]], None]) -> TrainResult:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    num_users, num_products = dataset.num_users, dataset.num_products
    graph = build_graph(dataset, split.train)
    users, products = (t.numpy() for t in graph[PURCHASED].edge_index)
    if config.batch_size is None:
        config = replace(config, batch_size=batch_size_for(len(users)))
    bought = interaction_matrix(split.train, num_users, num_products)
    valid_matrix = interaction_matrix(split.valid, num_users, num_products)
    valid_users = np.flatnonzero(np.diff(valid_matrix.indptr))

    model = build_model(num_users, num_products, config)
    inputs = model.prepare(graph)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    step = _data_parallel(model) if distributed.active() else model.loss
    best = (-1.0, 0, copy.deepcopy(model.state_dict()))
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        loss = _train_epoch(model, step, optimizer, inputs, users, products, bought, config, rng)
        figures = {"loss": distributed.mean(loss), "epoch_seconds": time.perf_counter() - t0}
        if distributed.active():  # rank 0 validates and decides; the others follow
            stop = _validate_and_decide(model, inputs, epoch, figures, best, started, config, valid_users,
                                        valid_matrix, bought, num_products) if distributed.is_main() else None
            keys = ("val_recall_20", "val_ndcg_20", "validation_seconds")
            *shared, stop_now = distributed.agree([*(figures.get(key, -1.0) for key in keys), float(bool(stop))])
            if len(valid_users):  # rank 0's figures on every rank: their histories pick the same best epoch
                figures.update(zip(keys, shared, strict=True))
            recall = shared[0]
            if recall > best[0] or not len(valid_users):
                best = (recall, epoch, copy.deepcopy(model.state_dict()))
            history.append(figures)
            on_epoch(epoch, figures)
            if stop_now:
                break
            continue
        if len(valid_users):
            user_emb, product_emb = _embeddings(model, inputs)
            top = rank_top_k(user_emb, product_emb, torch.from_numpy(valid_users), bought, 20)
            scores = evaluate_ranking(top, valid_matrix, valid_users, num_products,
                                      np.asarray(bought.sum(axis=0)).ravel(), ks=(20,))
            figures["val_recall_20"] = scores["Recall@20"]
            figures["val_ndcg_20"] = scores["NDCG@20"]
            figures["validation_seconds"] = time.perf_counter() - t0 - figures["epoch_seconds"]
            if scores["Recall@20"] > best[0]:
                best = (scores["Recall@20"], epoch, copy.deepcopy(model.state_dict()))
        else:
            best = (-1.0, epoch, copy.deepcopy(model.state_dict()))
        history.append(figures)
        on_epoch(epoch, figures)
        log.info("epoch %d %s", epoch, {k: round(v, 5) for k, v in figures.items()})
        if epoch - best[1] >= config.patience:
            log.info("early stop at epoch %d (best %d)", epoch, best[1])
            break
        if config.max_seconds is not None and time.perf_counter() - started > config.max_seconds:
            log.info("time budget of %.0f s spent at epoch %d", config.max_seconds, epoch)
            break
    model.load_state_dict(best[2])
    user_emb, product_emb = _embeddings(model, inputs)
    return TrainResult(model, user_emb.numpy(), product_emb.numpy(), best_epoch=best[1], history=history,
                       batch_size=config.batch_size)


def _validate_and_decide(model: GraphModel, inputs: Any, epoch: int, figures: dict[str, float],
                         best: tuple[float, int, Any], started: float, config: TrainConfig, valid_users: np.ndarray,
                         valid_matrix: sp.csr_matrix, bought: sp.csr_matrix, num_products: int) -> bool:
    """Rank 0's part of a distributed epoch: validation figures into ``figures``, and whether to stop (patience
    counted from the best epoch so far, this one included, or the time budget spent)."""
    best_epoch = best[1]
    if len(valid_users):
        t0 = time.perf_counter()
        user_emb, product_emb = _embeddings(model, inputs)
        top = rank_top_k(user_emb, product_emb, torch.from_numpy(valid_users), bought, 20)
        scores = evaluate_ranking(top, valid_matrix, valid_users, num_products,
                                  np.asarray(bought.sum(axis=0)).ravel(), ks=(20,))
        figures.update(val_recall_20=scores["Recall@20"], val_ndcg_20=scores["NDCG@20"],
                       validation_seconds=time.perf_counter() - t0)
        if scores["Recall@20"] > best[0]:
            best_epoch = epoch
    else:
        best_epoch = epoch
    log.info("epoch %d %s", epoch, {k: round(v, 5) for k, v in figures.items()})
    if epoch - best_epoch >= config.patience:
        log.info("early stop at epoch %d (best %d)", epoch, best_epoch)
        return True
    if config.max_seconds is not None and time.perf_counter() - started > config.max_seconds:
        log.info("time budget of %.0f s spent at epoch %d", config.max_seconds, epoch)
        return True
    return False


class _LossOf(torch.nn.Module):
    """A graph model's ``loss`` as a module's ``forward``: what DistributedDataParallel hooks its gradient
    averaging into (it wraps ``forward`` only)."""

    def __init__(self, model: GraphModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Any, users: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        return self.model.loss(inputs, users, pos, neg)


def _data_parallel(model: GraphModel) -> Callable[..., Tensor]:
    """The loss of ``model`` through DistributedDataParallel; rank 0's initial weights are broadcast to every
    rank. A parameter may take no part in the loss (ShareGNN's gate on data without social links), but the same
    ones every step: ``static_graph`` finds them in the first step only, where ``find_unused_parameters`` would
    walk the autograd graph on every step."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(_LossOf(model), static_graph=True)


def _train_epoch(model: GraphModel, step: Callable[..., Tensor], optimizer: torch.optim.Optimizer, inputs: Any,
                 users: np.ndarray, products: np.ndarray, bought: sp.csr_matrix, config: TrainConfig,
                 rng: np.random.Generator) -> float:
    model.train()
    order = rng.permutation(len(users))
    negatives = sample_negatives(users[order], bought, rng, config.num_negatives)
    ranks, me = distributed.world_size(), distributed.rank()
    total, batches = 0.0, 0
    for start in range(0, len(order), config.batch_size):
        rows = np.arange(start, min(start + config.batch_size, len(order)))
        if ranks > 1 and len(rows) >= ranks:  # this rank's shard of the global batch (a tiny last one: all)
            rows = np.array_split(rows, ranks)[me]
        idx = order[rows]
        u = torch.from_numpy(users[idx])
        pos = torch.from_numpy(products[idx])
        neg = torch.from_numpy(negatives[rows])
        loss = step(inputs, u, pos, neg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()
        batches += 1
    return total / max(batches, 1)


@torch.no_grad()
def _embeddings(model: GraphModel, inputs: Any) -> tuple[Tensor, Tensor]:
    model.eval()
    return model(inputs)
