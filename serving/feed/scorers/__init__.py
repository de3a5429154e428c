"""Feed scorers: each adds to a candidate's score (model, bounded social proof, long-tail exposure)."""
