"""Online serving: the gRPC server (`server`), one module per service (`api`), the feed pipeline (`feed`), seed
targets (`seeding`), event ingestion (`events`), the online stores, the model holder, auth and metrics. Never
imports `training`."""
