"""The served artefact: the model bundle (embeddings, id maps, history, influence), its FAISS product index,
the catalogue extension and the MLflow pyfunc that carries a bundle in the registry."""
