"""The feed's recommenders: graph models (LightGCN, the share-aware GNN), baselines, and the one registry of
them (`registry`) that training, evaluation and the CLI read."""
