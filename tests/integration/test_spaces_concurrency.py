"""Processes starting together (compose starts the API and the workers at once) create a new space's table and
pgvector index without tripping over each other: PostgreSQL's `IF NOT EXISTS` alone raised a unique violation on
`pg_class` in the first compose bring-up."""
from __future__ import annotations

import threading

from clip_embedder.models.embedders import SpaceIdentity


def test_concurrent_starts_create_a_space_once(store):
    names = [f"race{i}" for i in range(4)]
    errors: list[BaseException] = []
    for name in names:
        identity = SpaceIdentity(name, "test-model", "0" * 16, 8)
        barrier = threading.Barrier(6)

        def start(identity: SpaceIdentity = identity, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                store.spaces.ensure(identity)
            except BaseException as e:  # collected: a thread's exception would not fail the test
                errors.append(e)

        threads = [threading.Thread(target=start) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    try:
        assert errors == []
        assert {s.name for s in store.spaces.identities()} >= set(names)
    finally:
        for name in names:
            store.spaces.drop(name)
