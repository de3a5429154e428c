"""Seed targets online: GetSeedTargets' request checked against the serving model, then planned. The
offline half is `sharerank.training.seeding`."""
