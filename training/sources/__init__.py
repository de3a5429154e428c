"""Where dataset folders come from: the synthetic world generator and the importers of public datasets."""
