"""The erasure's training prompts as a Ray Data dataset, one fixed shard per worker.

The driver builds the prompt plan once and hands it to Ray Train as a dataset; each worker
reads only its own rows through `ray.train.get_dataset_shard`. Why fixed shards instead of
Ray Train's default `streaming_split`: that hands blocks out first come, first served, so
which worker trains on which prompts (and with it the adapter) would change between two runs
of the same seed. Here worker r gets every world-th training row from r, exactly the rows the
Eraser would pick itself (fade.erase.stride_shard), so a run gives the same adapter with or
without Ray Data.

Each worker still builds the plan itself (it needs the retain prompts and the concept specs);
the rows it receives are checked against it, so a worker whose code or catalog differs from
the driver's fails at once instead of training on other prompts.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from ray.train import DataConfig

from fade.concepts import PromptSets
from fade.erase import split_rows, stride_shard

if TYPE_CHECKING:
    from ray.data import DataIterator, Dataset

#: The dataset's name in the trainer's `datasets` and in `get_dataset_shard`.
PROMPTS = "prompts"
_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("concept", pa.int64()),
        ("target", pa.string()),
        ("neutral", pa.string()),
    ]
)


def prompt_dataset(prompts: PromptSets, seed: int, world_size: int) -> tuple[Dataset, list[int]]:
    """The training rows (row index, concept label, target and neutral prompt) ordered worker
    by worker, one block per worker, and how many rows each worker gets.

    One block per shard: `split_at_indices` then cuts only between blocks. A cut inside a block
    is a Ray task that needs a free CPU, and in a Tune trial or on a cluster whose CPUs the
    training workers hold, none is free: the workers would wait for their shards for ever."""
    import ray.data

    _, train_rows = split_rows(len(prompts.target), seed)
    shards = [stride_shard(train_rows, rank, world_size) for rank in range(world_size)]
    tables = [
        pa.Table.from_pylist(
            [
                {
                    "row": row,
                    "concept": prompts.concept_of[row],
                    "target": prompts.target[row],
                    "neutral": prompts.neutral[row],
                }
                for row in shard
            ],
            schema=_SCHEMA,
        )
        for shard in shards
    ]
    return ray.data.from_arrow(tables), [len(shard) for shard in shards]


class PromptShards(DataConfig):
    """Gives worker r the r-th block of `shard_sizes` consecutive rows of the prompt dataset."""

    def __init__(self, shard_sizes: list[int]):
        super().__init__(datasets_to_split=[PROMPTS])
        self.shard_sizes = shard_sizes

    def configure(
        self,
        datasets: dict[str, Dataset],
        world_size: int,
        worker_handles: Any,
        worker_node_ids: Any,
        **kwargs: Any,
    ) -> list[dict[str, DataIterator]]:
        if world_size != len(self.shard_sizes):
            raise ValueError(
                f"the prompt dataset was sharded for {len(self.shard_sizes)} workers, "
                f"not {world_size}"
            )
        bounds = list(itertools.accumulate(self.shard_sizes))[:-1]
        dataset = datasets[PROMPTS]
        pieces = dataset.split_at_indices(bounds) if bounds else [dataset]
        return [{PROMPTS: piece.iterator()} for piece in pieces]


def shard_rows(shard: DataIterator, prompts: PromptSets) -> list[int]:
    """This worker's training rows, read from its shard and checked against its own plan."""
    rows = []
    for item in shard.iter_rows():
        row = int(item["row"])
        theirs = (item["concept"], item["target"], item["neutral"])
        mine = (
            (prompts.concept_of[row], prompts.target[row], prompts.neutral[row])
            if 0 <= row < len(prompts.target)
            else None
        )
        if mine != theirs:
            raise ValueError(
                f"prompt row {row} differs between the driver and this worker "
                f"({item['target']!r} there): do both run the same FADE and catalogs?"
            )
        rows.append(row)
    return rows
