"""One module per gRPC service (servicer and proto ↔ domain mapping) and the one table of services."""
