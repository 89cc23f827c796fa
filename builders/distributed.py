"""Candidate search on a Dask cluster: every cross-validation fit of the search (and of the learning
curves) goes through joblib, so joblib's Dask backend spreads them over the cluster's workers without
changing what is computed. Folds, trials and seeds are fixed before any fit runs, so the same seed
gives the same leaderboard with or without a cluster (tests/unit/builders/test_distributed.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from builders.errors import BuildError

CONNECT_TIMEOUT_S = 10


@contextlib.contextmanager
def search_backend(
    scheduler: str | None, local_workers: int | None, progress: Callable[[str], None]
) -> Iterator[str | None]:
    """Within the block, joblib runs on the named Dask scheduler, or on a local cluster of
    ``local_workers`` processes started here (and stopped at the end); yields the scheduler's
    address, or None (nothing changes) without either."""
    if scheduler is None and local_workers is None:
        yield None
        return
    import joblib
    from dask.distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if local_workers is not None:
            if local_workers < 1:
                raise BuildError(f"--dask-local: expected at least 1 worker, got {local_workers}")
            cluster: Any = stack.enter_context(
                LocalCluster(
                    n_workers=local_workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    silence_logs=40,
                )
            )
            client = stack.enter_context(Client(cluster))
            where = f"a local Dask cluster of {local_workers} workers ({cluster.scheduler_address})"
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout=CONNECT_TIMEOUT_S))
            except (OSError, TimeoutError) as exc:
                raise BuildError(f"--dask-scheduler {scheduler}: cannot connect ({exc})") from exc
            workers = len(client.scheduler_info().get("workers", {}))
            where = f"the Dask cluster at {scheduler} ({workers} workers)"
        progress(f"search fits run on {where}")
        with joblib.parallel_backend("dask"):
            yield client.scheduler.address
