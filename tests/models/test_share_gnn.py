import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import HeteroData

from sharerank.models.recommenders.graph import FOLLOWS, PURCHASED, PURCHASED_BY, SHARED
from sharerank.models.recommenders.propagation import spmm_symmetric
from sharerank.models.recommenders.share_gnn import SampledSoftmaxLoss, ShareGNN, ShareGraph, social_adjacency


def toy_graph(num_users: int = 12, num_products: int = 15, num_purchases: int = 50, num_categories: int = 3,
              follows: int = 20, shares: int = 30, seed: int = 0) -> HeteroData:
    """A random graph shaped like :func:`sharerank.models.recommenders.graph.build_graph`'s output."""
    gen = torch.Generator().manual_seed(seed)
    data = HeteroData()
    data["user"].num_nodes = num_users
    data["product"].num_nodes = num_products
    data["product"].category = torch.randint(0, num_categories, (num_products,), generator=gen)
    key = torch.unique(torch.randint(0, num_users, (num_purchases,), generator=gen) * num_products
                       + torch.randint(0, num_products, (num_purchases,), generator=gen))
    purchased = torch.stack([key // num_products, key % num_products])
    data[PURCHASED].edge_index = purchased
    data[PURCHASED_BY].edge_index = purchased.flip(0)
    if follows:
        data[FOLLOWS].edge_index = torch.randint(0, num_users, (2, follows), generator=gen)
        data[FOLLOWS].edge_weight = torch.rand(follows, generator=gen) + 0.5
    if shares:
        data[SHARED].edge_index = torch.randint(0, num_users, (2, shares), generator=gen)
        data[SHARED].product = torch.randint(0, num_products, (shares,), generator=gen)
        data[SHARED].time = torch.arange(shares)
    return data


def dense_social(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor, num_users: int) -> torch.Tensor:
    """The naive reference of social_adjacency: a loop over arcs, then D^-1/2 (W + W^T) D^-1/2."""
    w = torch.zeros(num_users, num_users, dtype=torch.float64)
    for s, d, x in zip(src.tolist(), dst.tolist(), weight.tolist(), strict=True):
        if s != d:
            w[s, d] += x
    w = w + w.T
    deg = w.sum(dim=1)
    inv_sqrt = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
    return inv_sqrt[:, None] * w * inv_sqrt[None, :]


def dense_forward(model: ShareGNN, inputs: ShareGraph) -> tuple[torch.Tensor, torch.Tensor]:
    """The propagation rule of the docstring with dense matrices and an explicit per-layer gate."""
    adj = inputs.adj.to_dense()
    social = None if inputs.social is None else inputs.social.to_dense()
    u = model.num_users
    product_x = model.product_embedding.weight
    if model.category_embedding is not None:
        product_x = product_x + model.category_embedding.weight[inputs.category % model.category_buckets]
    x = torch.cat([model.user_embedding.weight, product_x])
    out = x
    for layer in range(model.num_layers):
        h = adj @ x
        if social is not None:
            has_links = (social != 0).any(dim=1, keepdim=True).float()
            g = torch.sigmoid(model.gate[layer]) * has_links
            h = torch.cat([(1 - g) * h[:u] + g * (social @ x[:u]), h[u:]])
        x = h
        out = out + x
    out = out / (model.num_layers + 1)
    user_out, product_out = F.normalize(out[:u], dim=-1), F.normalize(out[u:], dim=-1)
    if model.popularity is not None:
        user_out = torch.cat([user_out, torch.full((u, 1), model.temperature)], dim=1)
        product_out = torch.cat([product_out, (model.popularity * inputs.popularity)[:, None]], dim=1)
    return user_out, product_out


def test_social_adjacency_is_symmetric_and_normalised() -> None:
    gen = torch.Generator().manual_seed(1)
    src = torch.randint(0, 9, (40,), generator=gen)
    dst = torch.randint(0, 9, (40,), generator=gen)
    weight = torch.rand(40, generator=gen) + 0.1
    adj = social_adjacency(src, dst, weight, 10)  # user 9 has no links

    assert adj.layout == torch.sparse_csr and adj.shape == (10, 10)
    dense = adj.to_dense().double()
    torch.testing.assert_close(dense, dense.T)
    torch.testing.assert_close(dense, dense_social(src, dst, weight, 10), rtol=1e-6, atol=1e-7)
    assert dense.diagonal().abs().sum() == 0
    assert dense[9].abs().sum() == 0
    # Spectral radius of D^-1/2 W D^-1/2 is 1: propagation neither blows up nor vanishes.
    assert torch.linalg.eigvalsh(dense).abs().max().item() == pytest.approx(1.0, abs=1e-6)


def test_social_adjacency_hand_computed() -> None:
    # Arcs 0->1 (weight 2) and 1->2 (weight 1), both made symmetric: degrees 2, 3, 1.
    adj = social_adjacency(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([2.0, 1.0]), 3)
    expected = torch.tensor([[0.0, 2 / math.sqrt(6), 0.0],
                             [2 / math.sqrt(6), 0.0, 1 / math.sqrt(3)],
                             [0.0, 1 / math.sqrt(3), 0.0]])
    torch.testing.assert_close(adj.to_dense(), expected)


def test_social_adjacency_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="must lie in"):
        social_adjacency(torch.tensor([0]), torch.tensor([3]), None, 3)
    with pytest.raises(ValueError, match="positive"):
        social_adjacency(torch.tensor([0]), torch.tensor([1]), torch.tensor([0.0]), 3)
    with pytest.raises(ValueError, match="equal length"):
        social_adjacency(torch.tensor([0, 1]), torch.tensor([1]), None, 3)


def test_social_propagation_gradient_matches_dense_autograd() -> None:
    gen = torch.Generator().manual_seed(2)
    adj = social_adjacency(torch.randint(0, 8, (30,), generator=gen), torch.randint(0, 8, (30,), generator=gen),
                           None, 8)
    x = torch.randn(8, 4, requires_grad=True)
    target = torch.randn(8, 4)
    (spmm_symmetric(adj, spmm_symmetric(adj, x)) * target).sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    dense = adj.to_dense()
    (dense @ (dense @ x_ref) * target).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)


@pytest.mark.parametrize("num_layers", [0, 1, 3])
@pytest.mark.parametrize("category_buckets", [0, 2, 256])
def test_forward_shapes_and_dense_reference(num_layers: int, category_buckets: int) -> None:
    torch.manual_seed(0)
    model = ShareGNN(12, 15, embedding_dim=8, num_layers=num_layers, category_buckets=category_buckets)
    inputs = model.prepare(toy_graph())
    assert inputs.social is not None

    user_out, product_out = model(inputs)
    assert user_out.shape == (12, 8) and product_out.shape == (15, 8)
    torch.testing.assert_close(user_out.norm(dim=-1), torch.ones(12))
    ref_user, ref_product = dense_forward(model, inputs)
    torch.testing.assert_close(user_out, ref_user, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(product_out, ref_product, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("popularity_weight", [None, 0.5])
def test_gradient_matches_dense_autograd(popularity_weight: float | None) -> None:
    torch.manual_seed(0)
    model = ShareGNN(12, 15, embedding_dim=8, num_layers=2, popularity_weight=popularity_weight)
    inputs = model.prepare(toy_graph())
    width = 8 if popularity_weight is None else 9
    target_u, target_p = torch.randn(12, width), torch.randn(15, width)

    user_out, product_out = model(inputs)
    (user_out * target_u).sum().add((product_out * target_p).sum()).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref_user, ref_product = dense_forward(model, inputs)
    (ref_user * target_u).sum().add((ref_product * target_p).sum()).backward()
    for got, (name, p) in zip(grads, model.named_parameters(), strict=True):
        torch.testing.assert_close(got, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_share_weights_count_conversions() -> None:
    data = toy_graph(follows=0, shares=0)
    users, products = data[PURCHASED].edge_index
    # User 0 shares a product user 1 bought (a conversion) and one user 2 did not buy, twice.
    bought_by_1 = int(products[users == 1][0])
    not_bought_by_2 = next(p for p in range(15) if not ((users == 2) & (products == p)).any())
    data[SHARED].edge_index = torch.tensor([[0, 0, 0], [1, 2, 2]])
    data[SHARED].product = torch.tensor([bought_by_1, not_bought_by_2, not_bought_by_2])

    model = ShareGNN(12, 15, share_weight=1.0, conversion_weight=2.0)
    social = model.prepare(data).social.to_dense().double()
    w01 = math.log(2) + 2.0 * math.log(2)  # one share, one conversion
    w02 = math.log(3)  # two shares, no conversion
    w = torch.zeros(12, 12, dtype=torch.float64)
    w[0, 1] = w[1, 0] = w01
    w[0, 2] = w[2, 0] = w02
    deg = w.sum(dim=1).clamp(min=1e-12)
    torch.testing.assert_close(social, w / deg.sqrt()[:, None] / deg.sqrt()[None, :], rtol=1e-6, atol=1e-7)


def test_works_without_social_edges_and_with_one_category() -> None:
    torch.manual_seed(0)
    data = toy_graph(num_categories=1, follows=0, shares=0)
    model = ShareGNN(12, 15, embedding_dim=8)
    inputs = model.prepare(data)
    assert inputs.social is None
    user_out, product_out = model(inputs)
    assert torch.isfinite(user_out).all() and torch.isfinite(product_out).all()
    loss = model.loss(inputs, torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([[4], [5]]))
    loss.backward()
    assert torch.isfinite(loss)

    # The social view switched off: the same graph with links propagates like the one without.
    off = ShareGNN(12, 15, embedding_dim=8, social_weight=0.0)
    off.load_state_dict(model.state_dict())
    assert off.prepare(toy_graph(num_categories=1)).social is None
    torch.testing.assert_close(off(off.prepare(toy_graph(num_categories=1)))[0], user_out)


def test_popularity_prior_orders_by_logit() -> None:
    torch.manual_seed(0)
    model = ShareGNN(12, 15, embedding_dim=8, temperature=0.5, popularity_weight=0.7)
    data = toy_graph()
    inputs = model.prepare(data)
    buyers = torch.bincount(data[PURCHASED].edge_index[1], minlength=15).float()
    torch.testing.assert_close(inputs.popularity, torch.log1p(buyers))

    user_out, product_out = model(inputs)
    assert user_out.shape == (12, 9) and product_out.shape == (15, 9)
    u, p = (F.normalize(t, dim=-1) for t in model.propagate(inputs))
    logit = u @ p.T / 0.5 + 0.7 * torch.log1p(buyers)
    torch.testing.assert_close(user_out @ product_out.T, 0.5 * logit)

    users, products = data[PURCHASED].edge_index
    model.loss(inputs, users, products, torch.randint(0, 15, (users.numel(), 2))).backward()
    assert model.popularity.grad is not None and model.popularity.grad.abs() > 0


def test_no_category_attribute() -> None:
    data = toy_graph()
    del data["product"].category
    inputs = ShareGNN(12, 15).prepare(data)
    assert inputs.category.tolist() == [0] * 15


def test_sampled_softmax_matches_reference_and_gradcheck() -> None:
    torch.manual_seed(0)
    u = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    p = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    n = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    p_prior = torch.randn(6, dtype=torch.float64, requires_grad=True)
    n_prior = torch.randn(9, dtype=torch.float64, requires_grad=True)
    pos, pool = torch.randint(0, 4, (6,)), torch.randint(0, 4, (9,))
    criterion = SampledSoftmaxLoss(temperature=0.2)
    loss = criterion(u, p, n, pos, pool, p_prior, n_prior)

    # Naive reference: a loop over rows, the masked negatives left out.
    terms = []
    for b in range(6):
        un, pn = F.normalize(u[b], dim=0), F.normalize(p[b], dim=0)
        logits = [un @ pn / 0.2 + p_prior[b]]
        logits += [un @ F.normalize(n[j], dim=0) / 0.2 + n_prior[j] for j in range(9) if pool[j] != pos[b]]
        terms.append(torch.logsumexp(torch.stack(logits), dim=0) - logits[0])
    ref = torch.stack(terms).mean()
    torch.testing.assert_close(loss, ref)
    inputs = [u, p, n, p_prior, n_prior]
    for got, want in zip(torch.autograd.grad(loss, inputs), torch.autograd.grad(ref, inputs), strict=True):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(lambda a, b, c, d, e: criterion(a, b, c, pos, pool, d, e), inputs)
    # Without ids nothing is masked; without priors they are zero.
    unmasked = criterion(u, p, n)
    assert unmasked.item() >= criterion(u, p, n, pos, pool).item()
    assert repr(criterion) == "SampledSoftmaxLoss(temperature=0.2)"
    with pytest.raises(ValueError):
        SampledSoftmaxLoss(temperature=0.0)


def test_loss_decreases_on_toy_graph() -> None:
    torch.manual_seed(0)
    data = toy_graph(num_users=30, num_products=40, num_purchases=200)
    model = ShareGNN(30, 40, embedding_dim=16, num_layers=2)
    inputs = model.prepare(data)
    users, products = data[PURCHASED].edge_index
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(0)
    neg = torch.randint(0, 40, (users.numel(), 4), generator=gen)
    losses = []
    for _ in range(40):
        loss = model.loss(inputs, users, products, neg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert model.gate.grad is not None  # the social gate is learned


def test_pool_size_caps_the_negatives_at_a_prefix_of_the_sampled_ones() -> None:
    """With ``pool_size`` the loss is the uncapped loss over the first ``pool_size`` sampled products only."""
    torch.manual_seed(0)
    data = toy_graph(num_users=30, num_products=40, num_purchases=200)
    capped = ShareGNN(30, 40, embedding_dim=8, num_layers=2, pool_size=10)
    full = ShareGNN(30, 40, embedding_dim=8, num_layers=2)
    full.load_state_dict(capped.state_dict())
    inputs = capped.prepare(data)
    users, products = data[PURCHASED].edge_index
    neg = torch.randint(0, 40, (users.numel(), 2), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(capped.loss(inputs, users, products, neg),
                          full.loss(inputs, users, products, neg.reshape(-1)[:10].reshape(-1, 1)), rtol=1e-5)
    assert not torch.allclose(capped.loss(inputs, users, products, neg), full.loss(inputs, users, products, neg))
    with pytest.raises(ValueError, match="pool_size"):
        ShareGNN(3, 4, pool_size=0)


def test_deterministic_under_seed() -> None:
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(3)
        model = ShareGNN(12, 15, embedding_dim=8)
        inputs = model.prepare(toy_graph())
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        users, products = toy_graph()[PURCHASED].edge_index
        for _ in range(3):
            loss = model.loss(inputs, users, products, torch.randint(0, 15, (users.numel(), 2)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return model.get_embedding(inputs)

    first, second = run(), run()
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_reset_parameters() -> None:
    torch.manual_seed(0)
    model = ShareGNN(200, 300, embedding_dim=32, social_weight=0.25, popularity_weight=0.5)
    with torch.no_grad():
        model.gate.fill_(3.0)
        model.popularity.fill_(2.0)
    before = [p.detach().clone() for p in model.parameters()]
    model.reset_parameters()
    for old, new in zip(before, model.parameters(), strict=True):
        assert not torch.equal(old, new)
    assert model.user_embedding.weight.std().item() == pytest.approx(0.1, rel=0.05)
    torch.testing.assert_close(torch.sigmoid(model.gate), torch.full((3,), 0.25))
    assert model.popularity.item() == 0.5


def test_repr_and_validation() -> None:
    assert repr(ShareGNN(30, 40)) == ("ShareGNN(30, 40, embedding_dim=64, num_layers=3, temperature=0.15, "
                                      "social_weight=0.3, popularity_weight=None)")
    with pytest.raises(ValueError):
        ShareGNN(3, 4, num_layers=-1)
    with pytest.raises(ValueError):
        ShareGNN(3, 4, social_weight=1.0)
    with pytest.raises(ValueError):
        ShareGNN(3, 4, temperature=0.0)
    with pytest.raises(ValueError, match="'adj' must have shape"):
        model = ShareGNN(3, 4)
        model(ShareGNN(4, 4).prepare(toy_graph(num_users=4, num_products=4, num_purchases=6)))


def test_registered_in_training_loop() -> None:
    from sharerank.training.feed.train import TrainConfig, build_model

    model = build_model(5, 6, TrainConfig(model="sharegnn", embedding_dim=8, num_layers=2,
                                          model_params={"temperature": 0.2}))
    assert isinstance(model, ShareGNN)
    assert (model.embedding_dim, model.num_layers, model.temperature) == (8, 2, 0.2)
