"""Training and evaluating the feed's models offline: the epoch loop, the evaluation harness, ranking metrics
and time-ordered splits. The online half is `sharerank.serving.feed`."""
