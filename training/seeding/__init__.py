"""Seeding offline: `sharerank seed` on a dataset folder and `sharerank eval-seeding` (quality against the
oracle and baselines, cascade replay). The online half is `sharerank.serving.seeding`."""
