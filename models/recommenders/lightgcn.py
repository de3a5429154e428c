"""LightGCN over the user–product purchase graph: the collaborative-filtering baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Embedding
from torch_geometric.data import HeteroData

from sharerank.models.recommenders.graph import PURCHASED
from sharerank.models.recommenders.propagation import bipartite_adjacency, spmm_symmetric

__all__ = ["LightGCN"]


class LightGCN(torch.nn.Module):
    r"""The LightGCN model from the `"LightGCN: Simplifying and Powering Graph Convolution Network
    for Recommendation" <https://arxiv.org/abs/2002.02126>`_ paper, for a user–product graph.

    Embeddings are propagated linearly (no weights, no non-linearity) over the normalised
    bipartite graph, and the final embedding is a weighted sum over layers

    .. math::
        \mathbf{E}^{(l+1)} = \mathbf{D}^{-1/2} \mathbf{A} \mathbf{D}^{-1/2} \mathbf{E}^{(l)},
        \qquad
        \mathbf{E} = \sum_{l=0}^{L} \alpha_l \mathbf{E}^{(l)},

    where :math:`\mathbf{E}^{(0)}` stacks the learnable user and product ("ego") embeddings and a
    user's score for a product is the dot product of their final embeddings.

    Unlike :class:`torch_geometric.nn.models.LightGCN`, which scatters over :obj:`edge_index` in
    every layer, :meth:`forward` takes the adjacency pre-normalised once by
    :func:`~sharerank.models.recommenders.propagation.bipartite_adjacency` and propagates the whole graph with
    :func:`~sharerank.models.recommenders.propagation.spmm_symmetric`, whose backward pass reuses the same
    sparse matmul: about ten times faster per step on CPU.

    Args:
        num_users (int): The number of users :math:`U`.
        num_products (int): The number of products :math:`P`.
        embedding_dim (int, optional): The dimensionality of the embeddings. (default: :obj:`64`)
        num_layers (int, optional): The number of propagation layers :math:`L`.
            (default: :obj:`3`)
        alpha (float or torch.Tensor, optional): The layer weights :math:`\alpha_l`, a scalar for
            all layers or a vector of length :obj:`num_layers + 1`. If :obj:`None`, the layer mean
            :math:`\alpha_l = 1 / (L + 1)` of the paper. (default: :obj:`None`)
        reg_weight (float, optional): :math:`L_2` strength used by :meth:`loss`. (default: :obj:`1e-4`)

    Shapes:
        - **input:** normalised adjacency :math:`(U + P, U + P)`, sparse CSR
        - **output:** user embeddings :math:`(U, F)`, product embeddings :math:`(P, F)`
    """

    def __init__(
        self,
        num_users: int,
        num_products: int,
        embedding_dim: int = 64,
        num_layers: int = 3,
        alpha: float | Tensor | None = None,
        reg_weight: float = 1e-4,
    ) -> None:
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"'num_layers' must be non-negative (got {num_layers})")

        self.num_users = num_users
        self.num_products = num_products
        self.embedding_dim = embedding_dim
        self.num_layers = num_layers
        self.reg_weight = reg_weight

        if alpha is None:
            alpha = 1.0 / (num_layers + 1)
        if isinstance(alpha, Tensor):
            if alpha.shape != (num_layers + 1,):
                raise ValueError(f"'alpha' must have shape ({num_layers + 1},) (got {tuple(alpha.shape)})")
            alpha = alpha.detach().clone().float()
        else:
            alpha = torch.full((num_layers + 1,), float(alpha))
        self.alpha: Tensor
        self.register_buffer("alpha", alpha)

        self.user_embedding = Embedding(num_users, embedding_dim)
        self.product_embedding = Embedding(num_products, embedding_dim)

        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        # N(0, 0.1^2) as in the authors' PyTorch code; PyG's LightGCN uses Xavier-uniform instead.
        torch.nn.init.normal_(self.user_embedding.weight, std=0.1)
        torch.nn.init.normal_(self.product_embedding.weight, std=0.1)

    def forward(self, adj: Tensor) -> tuple[Tensor, Tensor]:
        r"""Propagates the ego embeddings over the whole graph.

        Args:
            adj (torch.Tensor): The symmetric normalised adjacency from
                :func:`~sharerank.models.recommenders.propagation.bipartite_adjacency`.

        Returns:
            The final user embeddings :math:`(U, F)` and product embeddings :math:`(P, F)`.
        """
        num_nodes = self.num_users + self.num_products
        if adj.shape != (num_nodes, num_nodes):
            raise ValueError(
                f"'adj' must have shape ({num_nodes}, {num_nodes}) for {self} (got {tuple(adj.shape)})"
            )

        x = torch.cat([self.user_embedding.weight, self.product_embedding.weight])
        out = x * self.alpha[0]
        for layer in range(self.num_layers):
            x = spmm_symmetric(adj, x)
            out = out + x * self.alpha[layer + 1]

        user_out, product_out = out.split([self.num_users, self.num_products])
        return user_out, product_out

    def prepare(self, graph: HeteroData) -> Tensor:
        """The normalised purchase adjacency of ``graph``, built once per training run."""
        users, products = graph[PURCHASED].edge_index
        return bipartite_adjacency(users, products, self.num_users, self.num_products)

    def loss(self, adj: Tensor, users: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        """BPR loss of a mini-batch; ``neg`` is ``(B, n)`` sampled products, each paired with its row."""
        n = neg.size(1)
        users, pos, neg = users.repeat_interleave(n), pos.repeat_interleave(n), neg.reshape(-1)
        user_out, product_out = self(adj)
        return self.recommendation_loss(
            user_out[users], product_out[pos], product_out[neg], self.user_embedding.weight[users],
            self.product_embedding.weight[pos], self.product_embedding.weight[neg], reg_weight=self.reg_weight)

    @torch.no_grad()
    def get_embedding(self, adj: Tensor) -> tuple[Tensor, Tensor]:
        r"""Returns the final user and product embeddings for inference (ranking, the ANN index),
        without recording an autograd graph. The model has no dropout or normalisation layers, so
        the result does not depend on :meth:`train` / :meth:`eval` mode.

        Args:
            adj (torch.Tensor): The symmetric normalised adjacency, as for :meth:`forward`.
        """
        return self.forward(adj)

    def recommendation_loss(
        self,
        user_emb: Tensor,
        pos_emb: Tensor,
        neg_emb: Tensor,
        ego_user: Tensor,
        ego_pos: Tensor,
        ego_neg: Tensor,
        reg_weight: float = 1e-4,
    ) -> Tensor:
        r"""Computes the mean Bayesian Personalised Ranking (BPR) loss of a batch of (user,
        bought product, not-bought product) triples, with :math:`L_2` regularisation of the
        triples' ego embeddings as in the paper

        .. math::
            \mathcal{L} = \frac{1}{B} \sum_{(u, i, j)} \operatorname{softplus}
            (\hat{y}_{uj} - \hat{y}_{ui})
            + \frac{\lambda}{2B} \left( \lVert \mathbf{E}^{(0)}_u \rVert^2
            + \lVert \mathbf{E}^{(0)}_i \rVert^2 + \lVert \mathbf{E}^{(0)}_j \rVert^2 \right),
            \qquad \hat{y}_{ui} = \mathbf{e}_u^{\top} \mathbf{e}_i,

        where :math:`\operatorname{softplus}(x) = -\ln \sigma(-x)`, the numerically stable form
        of :math:`-\ln \sigma(\hat{y}_{ui} - \hat{y}_{uj})`. Only the ego embeddings are
        regularised, because they are the only parameters; the :math:`1/2` follows the authors'
        code, so :obj:`reg_weight` means the same as their ``decay``.

        Args:
            user_emb (torch.Tensor): Final embeddings of the batch's users :math:`(B, F)`.
            pos_emb (torch.Tensor): Final embeddings of their bought products :math:`(B, F)`.
            neg_emb (torch.Tensor): Final embeddings of their sampled negatives :math:`(B, F)`.
            ego_user (torch.Tensor): Layer-0 embeddings of the same users :math:`(B, F)`.
            ego_pos (torch.Tensor): Layer-0 embeddings of the bought products :math:`(B, F)`.
            ego_neg (torch.Tensor): Layer-0 embeddings of the negatives :math:`(B, F)`.
            reg_weight (float, optional): The :math:`L_2` strength :math:`\lambda`.
                (default: :obj:`1e-4`)
        """
        pos_score = (user_emb * pos_emb).sum(dim=-1)
        neg_score = (user_emb * neg_emb).sum(dim=-1)
        bpr = F.softplus(neg_score - pos_score).mean()

        squared_norm = ego_user.pow(2).sum() + ego_pos.pow(2).sum() + ego_neg.pow(2).sum()
        return bpr + reg_weight * 0.5 * squared_norm / user_emb.size(0)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.num_users}, {self.num_products}, "
            f"embedding_dim={self.embedding_dim}, num_layers={self.num_layers})"
        )
