import math

import pytest
import torch

from sharerank.models.recommenders.lightgcn import LightGCN
from sharerank.models.recommenders.propagation import bipartite_adjacency


def random_adjacency(num_users: int, num_products: int, num_edges: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    users = torch.randint(0, num_users, (num_edges,), generator=gen)
    products = torch.randint(0, num_products, (num_edges,), generator=gen)
    return bipartite_adjacency(users, products, num_users, num_products)


@pytest.mark.parametrize("embedding_dim", [8, 16])
@pytest.mark.parametrize("num_layers", [0, 1, 3])
def test_lightgcn_shapes_and_dense_reference(embedding_dim: int, num_layers: int) -> None:
    torch.manual_seed(0)
    model = LightGCN(10, 14, embedding_dim=embedding_dim, num_layers=num_layers)
    adj = random_adjacency(10, 14, 40)

    user_out, product_out = model(adj)
    assert user_out.shape == (10, embedding_dim)
    assert product_out.shape == (14, embedding_dim)

    # The layer mean of A^l E0, computed densely.
    dense = adj.to_dense()
    x = torch.cat([model.user_embedding.weight, model.product_embedding.weight]).detach()
    expected, layer = x.clone(), x
    for _ in range(num_layers):
        layer = dense @ layer
        expected = expected + layer
    expected = expected / (num_layers + 1)
    torch.testing.assert_close(torch.cat([user_out, product_out]), expected, rtol=1e-5, atol=1e-6)


def test_lightgcn_repr() -> None:
    assert repr(LightGCN(30, 40)) == "LightGCN(30, 40, embedding_dim=64, num_layers=3)"
    assert (
        repr(LightGCN(3, 4, embedding_dim=8, num_layers=2)) == "LightGCN(3, 4, embedding_dim=8, num_layers=2)"
    )


def test_lightgcn_alpha() -> None:
    assert LightGCN(3, 4, num_layers=2).alpha.tolist() == pytest.approx([1 / 3] * 3)
    assert LightGCN(3, 4, num_layers=2, alpha=0.5).alpha.tolist() == [0.5] * 3

    # Weight only on the ego layer: the output is the ego embeddings themselves.
    model = LightGCN(3, 4, embedding_dim=4, num_layers=2, alpha=torch.tensor([1.0, 0.0, 0.0]))
    user_out, product_out = model(random_adjacency(3, 4, 6))
    torch.testing.assert_close(user_out, model.user_embedding.weight)
    torch.testing.assert_close(product_out, model.product_embedding.weight)

    with pytest.raises(ValueError):
        LightGCN(3, 4, num_layers=2, alpha=torch.ones(2))
    with pytest.raises(ValueError):
        LightGCN(3, 4, num_layers=-1)


def test_lightgcn_rejects_adjacency_of_another_graph() -> None:
    with pytest.raises(ValueError, match="'adj' must have shape"):
        LightGCN(3, 4)(random_adjacency(4, 4, 6))


def test_reset_parameters() -> None:
    torch.manual_seed(0)
    model = LightGCN(200, 300, embedding_dim=32)
    before = [p.detach().clone() for p in model.parameters()]
    model.reset_parameters()
    for old, new in zip(before, model.parameters(), strict=True):
        assert not torch.equal(old, new)
    # N(0, 0.1^2) initialisation, as in the authors' code.
    assert model.user_embedding.weight.std().item() == pytest.approx(0.1, rel=0.05)
    assert model.product_embedding.weight.mean().item() == pytest.approx(0.0, abs=0.01)


def test_get_embedding_matches_forward_without_graph() -> None:
    model = LightGCN(5, 6, embedding_dim=4)
    adj = random_adjacency(5, 6, 12)
    user_out, product_out = model.get_embedding(adj)
    assert not user_out.requires_grad and not product_out.requires_grad
    expected_user, expected_product = model(adj)
    torch.testing.assert_close(user_out, expected_user)
    torch.testing.assert_close(product_out, expected_product)


def test_recommendation_loss_hand_computed() -> None:
    model = LightGCN(2, 2, embedding_dim=2)
    zeros = torch.zeros(3, 2)
    # Equal scores: softplus(0) = ln 2, and no regularisation on zero embeddings.
    assert model.recommendation_loss(zeros, zeros, zeros, zeros, zeros, zeros).item() == pytest.approx(
        math.log(2)
    )

    # One triple: u = (1, 0), i = (2, 0), j = (0, 1) -> y_ui = 2, y_uj = 0, BPR = softplus(-2);
    # ego norms 1 + 4 + 1 = 6, so the L2 term is 0.1 * 6 / (2 * 1) = 0.3.
    u, i, j = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    loss = model.recommendation_loss(u, i, j, u, i, j, reg_weight=0.1)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-2.0)) + 0.3)


def test_loss_decreases_on_learnable_pattern() -> None:
    # Two communities: users 0-7 buy products 0-9, users 8-15 buy products 10-19. BPR with
    # negatives from the other community must learn to score a user's own community higher.
    torch.manual_seed(0)
    num_users, num_products = 16, 20
    users = torch.arange(num_users).repeat_interleave(5)
    community = (users >= 8).long()
    products = community * 10 + torch.randint(0, 10, users.shape)
    adj = bipartite_adjacency(users, products, num_users, num_products)

    model = LightGCN(num_users, num_products, embedding_dim=8, num_layers=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    negatives = (1 - community) * 10 + torch.randint(0, 10, users.shape)

    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        user_out, product_out = model(adj)
        loss = model.recommendation_loss(
            user_out[users],
            product_out[products],
            product_out[negatives],
            model.user_embedding(users),
            model.product_embedding(products),
            model.product_embedding(negatives),
        )
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    assert losses[-1] < 0.25 * losses[0]
    user_out, product_out = model.get_embedding(adj)
    scores = user_out @ product_out.T
    own = torch.where((torch.arange(num_users) < 8)[:, None], scores[:, :10], scores[:, 10:])
    other = torch.where((torch.arange(num_users) < 8)[:, None], scores[:, 10:], scores[:, :10])
    assert (own.min(dim=1).values > other.max(dim=1).values).all()
