"""The prompt dataset (Ray Data): every worker gets a fixed shard, the Eraser's own, and a
shard that differs from the worker's plan is refused."""

from __future__ import annotations

import pytest
import ray.data

from fade.config import load_config
from fade.distributed.prompts import PROMPTS, PromptShards, prompt_dataset, shard_rows
from fade.erase import split_rows, stride_shard
from fade.plan import make_plan


@pytest.fixture(scope="module")
def prompts():
    cfg = load_config(overrides=["concepts.names=[circle,velmora,d]", "seed=3"])
    return make_plan(cfg).prompts


def test_each_worker_gets_the_erasers_own_rows_and_together_all_of_them(
    ray_session, prompts
) -> None:
    world = 3
    dataset, sizes = prompt_dataset(prompts, seed=3, world_size=world)
    shards = PromptShards(sizes).configure({PROMPTS: dataset}, world, None, None)
    _, train_rows = split_rows(len(prompts.target), seed=3)
    got = [shard_rows(shard[PROMPTS], prompts) for shard in shards]
    assert got == [stride_shard(train_rows, rank, world) for rank in range(world)]
    assert sorted(row for rows in got for row in rows) == sorted(train_rows)
    assert all(got)


def test_a_shard_from_another_plan_is_refused(ray_session, prompts) -> None:
    other = make_plan(load_config(overrides=["concepts.names=[square]", "seed=3"])).prompts
    dataset, sizes = prompt_dataset(other, seed=3, world_size=1)
    (shard,) = PromptShards(sizes).configure({PROMPTS: dataset}, 1, None, None)
    with pytest.raises(ValueError, match="differs between the driver and this worker"):
        shard_rows(shard[PROMPTS], prompts)
    beyond = ray.data.from_items([{"row": 10**6, "concept": 0, "target": "a", "neutral": "b"}])
    with pytest.raises(ValueError, match="differs"):
        shard_rows(beyond.iterator(), prompts)


def test_a_worker_count_other_than_the_datasets_is_refused(ray_session, prompts) -> None:
    dataset, sizes = prompt_dataset(prompts, seed=3, world_size=2)
    with pytest.raises(ValueError, match="sharded for 2 workers, not 3"):
        PromptShards(sizes).configure({PROMPTS: dataset}, 3, None, None)


def test_shards_are_whole_blocks_also_for_many_rows_and_more_workers_than_rows(
    ray_session,
) -> None:
    """A cut inside a block would need a Ray task (and a free CPU, which a busy cluster lacks)."""
    names = "[circle,square,triangle,heart,ring,b,c,d,velmora,okafor]"
    many = make_plan(load_config(overrides=[f"concepts.names={names}"])).prompts
    dataset, sizes = prompt_dataset(many, seed=0, world_size=2)
    assert sum(sizes) > 200 and dataset.num_blocks() == 2
    shards = PromptShards(sizes).configure({PROMPTS: dataset}, 2, None, None)
    _, train_rows = split_rows(len(many.target), seed=0)
    assert [shard_rows(s[PROMPTS], many) for s in shards] == [train_rows[0::2], train_rows[1::2]]

    few = make_plan(
        load_config(overrides=["concepts.names=[circle]", "concepts.prompts_per_concept=2"])
    ).prompts
    dataset, sizes = prompt_dataset(few, seed=0, world_size=3)
    assert sizes == [1, 0, 0]
    shards = PromptShards(sizes).configure({PROMPTS: dataset}, 3, None, None)
    assert [len(shard_rows(s[PROMPTS], few)) for s in shards] == [1, 0, 0]
