"""Offline jobs: the runners behind `sharerank train | eval | recommend` (`jobs`), the feed models' training
and evaluation (`feed`), seeding from a folder and its evaluation (`seeding`), and where dataset folders come
from (`sources`: the simulator and the importers). Never imports `serving`."""
