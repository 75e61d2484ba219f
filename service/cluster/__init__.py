"""Cluster mode (EMBED_CLUSTER=ray): each table sharded over shard servers on a Ray cluster.

    front (python -m service.api)  ->  catalog (one Ray actor: tables, servers, snapshots)
    SDK / front  --HTTP-->  shard servers (Ray actors, one shard each, their own HTTP)
                            shard 0 of each table: its leader (orders the table's steps)

The parts, each in its own module: front (the registry and durability interfaces the API
uses), table (a sharded table as a front sees it), catalog, worker (a shard server),
worker_app (its HTTP), shard (its rows, on the core's table), leader (a table's steps in two
phases), peers (the leader's HTTP to the other shards), journal (a shard's idempotency
memory), runtime (joining Ray). Importing this package imports no ray; front, catalog, worker
and runtime do, and only cluster mode imports them (service.api.main.tables_of).
"""
