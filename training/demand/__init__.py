"""Demand signals (``sharerank demand``): volumes over time per category and community, and their forecasts."""
