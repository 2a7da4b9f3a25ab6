"""The response cache: re-running the same deterministic requests costs nothing.

`policy` decides what is cached and under which key (pure functions); `store` holds the
backends (a table in the run database, or Redis) behind one Protocol, guarded so that a
broken cache is never worse than no cache.
"""
