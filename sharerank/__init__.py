"""sharerank: feed ranking and KOC seeding for social e-commerce.

This folder holds the bottom layer, which every other package imports: the settings (`config`), the
dataset-folder contract (`dataset`) and the MLflow model registry (`registry`); and, on top of everything,
the command line (`cli`) and the end-to-end demo (`demo`). The layers between live in the top-level
folders, importable as `sharerank.models`, `sharerank.training`, `sharerank.serving` and `sharerank.v1`.
"""
