"""Event ingestion: the durable event log (a dataset folder) and the recorder that feeds the online store."""
