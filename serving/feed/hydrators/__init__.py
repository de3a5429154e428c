"""Feed hydrators: the only stages that read state (the online store, the user's vector); they fail open."""
