"""Models, pure: numpy/torch/FAISS over the dataset contract, no MLflow calls, no files but the contract.

`recommenders` (the feed models and their baselines), `seeding` (influence and seed selection) and
`artifact` (the served bundle, its product index and the MLflow pyfunc wrapper that carries it).
"""
