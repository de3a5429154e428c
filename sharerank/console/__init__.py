"""The growth console (``sharerank console``): a web app over the gRPC service, as a client with the growth
token, for planning launches (seeds, reach curve), audiences, demand signals and the serving model."""
