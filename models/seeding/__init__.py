"""Influence and seeding: the learned influence model, IC graphs, RR-set seed selection (OPIM-C, SUBSIM,
HIST), Monte Carlo spread, baselines, communities and seed planning with reasons (`plan`)."""
