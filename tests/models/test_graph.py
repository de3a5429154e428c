"""Graph building: purchase, share and social edges as a PyG HeteroData over users and products."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sharerank.dataset.reader import load_dataset
from sharerank.models.recommenders.graph import (
    FOLLOWS,
    PURCHASED,
    PURCHASED_BY,
    SHARED,
    build_graph,
    friends_matrix,
    interaction_matrix,
)
from sharerank.training.feed.split import split_dataset


def test_graph_has_every_node_and_edge_type(tiny_world: Path) -> None:
    dataset = load_dataset(tiny_world)
    split = split_dataset(dataset)
    graph = build_graph(dataset, split.train)
    assert graph["user"].num_nodes == dataset.num_users
    assert graph["product"].num_nodes == dataset.num_products
    assert graph["product"].category.shape == (dataset.num_products,)
    assert len(graph.category_names) == len(set(dataset.category))
    purchased = graph[PURCHASED].edge_index.numpy()
    assert purchased.shape[1] == len({(u, p) for u, p in zip(split.train.user, split.train.product, strict=True)})
    np.testing.assert_array_equal(graph[PURCHASED_BY].edge_index.numpy(), purchased[::-1])
    assert graph[SHARED].edge_index.shape[1] == len(dataset.shares.id) == graph[SHARED].product.numel()
    assert graph[FOLLOWS].edge_index.shape[1] == len(dataset.social.src)
    graph.validate()


def test_held_out_purchases_never_become_edges(tiny_world: Path) -> None:
    dataset = load_dataset(tiny_world)
    split = split_dataset(dataset)
    edges = set(map(tuple, build_graph(dataset, split.train)[PURCHASED].edge_index.t().tolist()))
    train_pairs = set(zip(split.train.user.tolist(), split.train.product.tolist(), strict=True))
    held_out = set(zip(split.test.user.tolist(), split.test.product.tolist(), strict=True)) - train_pairs
    assert held_out and not edges & held_out


def test_friends_are_symmetric_binary_and_include_share_partners(tiny_world: Path) -> None:
    dataset = load_dataset(tiny_world)
    friends = friends_matrix(dataset)
    assert (friends != friends.T).nnz == 0 and set(np.unique(friends.data).tolist()) == {1.0}
    s = dataset.shares
    assert all(friends[a, b] == 1 for a, b in zip(s.sharer[:50], s.recipient[:50], strict=True))
    assert friends.diagonal().sum() == 0


def test_interaction_matrix_is_binary_and_deduplicated(tiny_world: Path) -> None:
    dataset = load_dataset(tiny_world)
    matrix = interaction_matrix(dataset.purchases, dataset.num_users, dataset.num_products)
    assert matrix.shape == (dataset.num_users, dataset.num_products)
    assert set(np.unique(matrix.data).tolist()) == {1.0}
