"""Ring detection offline: `sharerank rings` on a dataset folder, with precision and recall against a simulated
world's truth. The detector itself is `sharerank.models.rings`."""
