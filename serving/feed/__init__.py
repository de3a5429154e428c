"""The feed, online: GetFeed's pipeline (`pipeline`: hydrate → retrieve → filter → score → re-rank → page), one
stage per module in the subpackages, and similar products. The offline half is `sharerank.training.feed`."""
