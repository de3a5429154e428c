"""Audience scoring: who is likely to buy a product soon (GetAudience and its offline evaluation)."""
