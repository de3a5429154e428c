"""Feed sources: where candidates come from (FAISS, friends' purchases, shares received, popular)."""
