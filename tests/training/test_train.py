"""The epoch loop's data-dependent defaults: batches that grow with the purchases they cover."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sharerank.dataset.reader import load_dataset
from sharerank.training.feed.train import batch_size_for, default_config, train_model
from sharerank.training.jobs import training_split


@pytest.mark.parametrize(("purchases", "batch"), [(0, 2048), (74_267, 2048), (284_086, 8192), (810_128, 16384),
                                                  (10**9, 16384)])
def test_an_epoch_is_at_most_64_steps_within_the_bounds(purchases: int, batch: int) -> None:
    assert batch_size_for(purchases) == batch
    assert purchases / batch <= 64 or batch == 16384


def test_the_loop_resolves_a_batch_size_left_to_the_data(tiny_world: Path) -> None:
    dataset = load_dataset(tiny_world, with_test=False)
    split = training_split(dataset)
    config = replace(default_config("sharegnn"), epochs=1, embedding_dim=8, num_layers=1)
    assert config.batch_size is None
    result = train_model(dataset, split, config)
    assert result.batch_size == batch_size_for(len(split.train)) and len(result.history) == 1
