"""One execution layer for the parallel parts: leave-one-out replays, a sweep's seeds, batches of cleanses.

A caller describes a batch of independent tasks (`Tasks`): how to run one here, with the
store at hand, and how to run one on a worker that has no store (a module-level function
of a payload that carries what every task needs: config, trace segment, data rows, feature
net; see `payload.py`). `open_executor` picks where they run:

- an existing Dask scheduler: `address`, else env GAN_INFLUENCE_CLUSTER (`tcp://HOST:8786`);
- else, when the cores hold more than one worker at this process's torch thread count and
  the batch is large enough, a Dask LocalCluster of that many 1-thread worker processes on
  127.0.0.1 (measured against the former process pool and in-process: bench/execution.py),
  started in the background while the caller prepares its tasks;
- else this process, one task after another.

Every task runs at this process's torch thread count, so results are bit-identical to
running it here (float32 reductions depend on the thread count). Results come back to the
caller, which alone writes the store. A worker lost mid-task is retried by the scheduler
(`distributed.scheduler.allowed-failures`, default 3); a payload lost with it is recomputed
from the task graph. Cancelling cancels the pending futures and sets a Dask Event that
running tasks check between steps.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import queue
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from .. import allocator
from ..errors import Cancelled, ConfigError, InfluenceError
from ..progress import CancelToken, Progress, ProgressFn

ENV_CLUSTER = "GAN_INFLUENCE_CLUSTER"
MIN_TASKS_PER_WORKER = 4  # below this a local worker's start-up (imports, context) is not worth it
POLL_S = 0.2  # how often the client looks at the cancel flag while tasks run
MIN_IN_FLIGHT = 8  # tasks submitted ahead; at least 2 per worker
EVENT_EVERY_S = 1.0  # a task's progress events and cancel checks, at most this often
CONNECT_TIMEOUT = "10s"  # how long the client keeps trying a scheduler before the address is called unreachable

# The local cluster's Dask settings (docs/cluster.md gives them for workers started by hand).
HOUSEKEEPING = {
    # Housekeeping that wakes every process many times a second (a stack sample every 10 ms, an event-loop
    # tick every 20 ms, memory every 100 ms) takes the GIL and a core from the replays when every core runs
    # one: 2 workers on 2 cores spent 11 s of 146 s waiting for CPU with Dask's defaults, 3 s with these.
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}


def local_cluster_config() -> dict[str, Any]:
    # The nannies start workers with MALLOC_TRIM_THRESHOLD_=65536 (replays ran 2.5x slower there); the
    # workers get the engine's allocator settings instead (`allocator`; None: glibc's default).
    spawn = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in allocator.child_environ().items()}
    return {**HOUSEKEEPING, **spawn}


log = logging.getLogger(__name__)


@dataclass
class TaskEnv:
    """What a running task may use besides its payload: progress of its own stages, a cancel flag."""

    progress: ProgressFn | None = None
    cancel: CancelToken | None = None
    send: Callable[[dict], None] | None = None  # on a worker: a message to the client's Tasks.receive


@dataclass
class Tasks:
    """A batch of independent tasks over `items`.

    here(item, env): runs one task in this process (with the store).
    remote(payload, shipped item, env): runs one on a worker; a module-level function (workers import it).
    payload(key): what the remote tasks of one key need, built once per key and only when a cluster is used.
    payload_key(item): which payload an item's task takes (default: one for the whole batch; a sweep's
    cleanses take their seed's run, so that one batch spans every seed without a barrier between them).
    ship(item): what of an item travels with its task (default: the item itself).
    receive(item, message): the client's handler of what a remote task sends before it ends (a
    training checkpoint: finished parts are kept even if the task is lost later).
    """

    items: list
    here: Callable[[Any, TaskEnv], Any]
    remote: Callable[[Any, Any, TaskEnv], Any]
    payload: Callable[[Any], Any] = lambda key: None
    payload_key: Callable[[Any], Any] = lambda item: None
    ship: Callable[[Any], Any] = lambda item: item
    receive: Callable[[Any, dict], None] | None = None


class Executor:
    """Runs `Tasks` here or on a Dask cluster; yields (item, result) in order of completion."""

    def __init__(self, client=None, starting: concurrent.futures.Future | None = None):
        self._client, self._starting = client, starting  # starting: a local cluster's client, on its way
        self.threads = torch.get_num_threads()

    @property
    def client(self):
        """The Dask client, None for this process; waits for a local cluster still starting."""
        if self._starting is not None:
            self._client, self._starting = self._starting.result()[1], None
        return self._client

    def run(self, tasks: Tasks, progress: ProgressFn | None = None,
            cancel: CancelToken | None = None) -> Iterator[tuple[Any, Any]]:
        """Progress reports from inside the tasks go to `progress`, each with its task's place in `tasks.items`
        (info "task": `progress.BatchProgress` adds them up); the caller counts finished tasks."""
        if self.client is None:
            for i, item in enumerate(tasks.items):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled")
                yield item, tasks.here(item, TaskEnv(_tagged(progress, i), cancel))
            return
        yield from self._run_dask(tasks, progress, cancel)

    def _run_dask(self, tasks: Tasks, progress, cancel) -> Iterator[tuple[Any, Any]]:
        from distributed import Event, wait

        if not tasks.items:
            return
        client = self.client
        name = f"gan-influence-{uuid.uuid4().hex[:12]}"
        events: queue.Queue = queue.Queue()
        client.subscribe_topic(name, lambda event: events.put(event[1]))
        stop = Event(name, client=client)
        payloads: dict = {}  # payload key -> its future, submitted with the first task that takes it
        futures: dict = {}
        pending: set = set()
        unsent = list(enumerate(tasks.items))[::-1]
        try:
            while True:
                # A few tasks per worker in flight: shipped items (a sweep seed's data set) are built as needed.
                window = max(MIN_IN_FLIGHT, 2 * len(client.scheduler_info()["workers"])) if unsent else 0
                while unsent and len(pending) < window:
                    i, item = unsent.pop()
                    key = tasks.payload_key(item)
                    if key not in payloads:
                        # Submitted as a task (not scattered): the scheduler keeps it, so it is recomputed if
                        # its worker dies.
                        payloads[key] = _submit(client, _identity, tasks.payload(key))
                    f = _submit(client, _remote, tasks.remote, payloads[key], tasks.ship(item), i, self.threads, name)
                    futures[f] = i
                    pending.add(f)
                if not pending:
                    break
                try:
                    finished, pending = wait(pending, timeout=POLL_S, return_when="FIRST_COMPLETED")
                except TimeoutError:  # nothing finished in POLL_S
                    finished = set()
                except (concurrent.futures.CancelledError, OSError) as e:  # OSError: distributed's CommClosedError
                    raise _lost(e) from None
                _forward(events, tasks, progress)
                if cancel is not None and cancel.is_set():
                    stop.set()
                    raise Cancelled("cancelled")
                for f in finished:  # released as they are handed over: the cluster forgets their results
                    i = futures.pop(f)
                    yield tasks.items[i], _result(f)
        finally:
            with contextlib.suppress(OSError):  # the scheduler is gone: nothing left to cancel
                client.cancel(list(pending) + list(payloads.values()))
                client.unsubscribe_topic(name)
                if pending:
                    stop.set()  # tasks already running stop at their next step


def _submit(client, fn: Callable, *args: Any):
    with warnings.catch_warnings():  # large task arguments are meant: they make workers independent of a store
        warnings.simplefilter("ignore", UserWarning)
        return client.submit(fn, *args, pure=False)


def _result(future) -> Any:
    from distributed.scheduler import KilledWorker

    try:
        return future.result()
    except KilledWorker as e:
        raise InfluenceError(f"a cluster worker died on every try of a task ({e}); see the workers' logs") from None
    except concurrent.futures.CancelledError as e:
        raise _lost(e) from None


def _lost(e: Exception) -> InfluenceError:
    """Tasks cancelled by someone else than us: the connection to the scheduler was lost, or it restarted."""
    lost = isinstance(e, OSError) or "connection" in str(e)
    reason = "lost the connection to the scheduler" if lost else "the scheduler cancelled them"
    return InfluenceError(f"the Dask cluster dropped the tasks ({reason}); finished parts are kept, run the same "
                          "command again to resume")


def _forward(events: queue.Queue, tasks: Tasks, progress: ProgressFn | None) -> None:
    """Hands the tasks' events to the caller, here in the caller's thread."""
    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            return
        if "message" in event:
            if tasks.receive is not None:
                tasks.receive(tasks.items[event["item"]], event["message"])
        elif progress is not None:
            p = event["progress"]
            progress(Progress(p["stage"], p["done"], p["total"], p["seconds"], p["info"]))


def _tagged(progress: ProgressFn | None, index: int) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda p: progress(dataclasses.replace(p, info={**p.info, "task": index}))


# ---------------------------------------------------------------- on a worker
def _identity(x: Any) -> Any:
    return x


class _EventToken(CancelToken):
    """Set when the client's Dask Event is; looked up at most once per EVENT_EVERY_S."""

    def __init__(self, name: str):
        super().__init__()
        self.name, self.checked = name, 0.0

    def is_set(self) -> bool:
        from distributed import Event

        now = time.monotonic()
        if not self._set and now - self.checked >= EVENT_EVERY_S:
            self.checked = now
            self._set = Event(self.name).is_set()
        return self._set


def _remote(fn: Callable, payload: Any, item: Any, index: int, threads: int, name: str) -> Any:
    from distributed import get_worker

    torch.set_num_threads(threads)  # the client's count: bit-identical to running the task there (same processor)
    worker, last = get_worker(), [0.0]

    def progress(p: Progress) -> None:
        now = time.monotonic()
        if now - last[0] >= EVENT_EVERY_S or p.done == p.total:
            last[0] = now
            info = {**{k: v for k, v in p.info.items() if isinstance(v, (int, float, str))}, "task": index}
            worker.log_event(name, {"progress": {"stage": p.stage, "done": p.done, "total": p.total,
                                                 "seconds": p.seconds, "info": info}})

    def send(message: dict) -> None:
        worker.log_event(name, {"item": index, "message": message})

    return fn(payload, item, TaskEnv(progress, _EventToken(name), send))


_built: dict[str, Any] = {}


def worker_cached(key: str, build: Callable[[], Any]) -> Any:
    """One object per payload key in a worker process (a context, a replayer), the last two kept."""
    if key not in _built:
        while len(_built) >= 2:
            _built.pop(next(iter(_built)))
        _built[key] = build()
    return _built[key]


# ---------------------------------------------------------------- choosing where
def cluster_address(address: str | None = None) -> str | None:
    return address or os.environ.get(ENV_CLUSTER) or None


def worker_capacity(workers: int | None = None) -> int:
    """The local worker processes a batch could have: `workers`, else as many as the cores hold at this thread
    count; 1 where a cluster (GAN_INFLUENCE_CLUSTER) runs the batch (its size is its scheduler's)."""
    if cluster_address():
        return 1
    return max(1, workers or (os.cpu_count() or 1) // torch.get_num_threads())


def local_workers(tasks: int, workers: int | None = None) -> int:
    """Local worker processes for `tasks` tasks: as many as the cores hold at this thread count."""
    return max(1, min(worker_capacity(workers), tasks // MIN_TASKS_PER_WORKER))


@contextlib.contextmanager
def open_executor(tasks: int, workers: int | None = None, address: str | None = None) -> Iterator[Executor]:
    """The executor for a batch of `tasks` (see the module docstring for the choice)."""
    address = cluster_address(address)
    if address:
        with _connect(address) as client:
            yield Executor(client)
        return
    workers = local_workers(tasks, workers)
    if workers <= 1:
        yield Executor()
        return
    # Started in a thread: the caller's own set-up (a data set, the baseline metrics) overlaps with the
    # workers' start (2-3 s, most of it importing torch).
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gan-influence-cluster") as starter:
        started = starter.submit(_start_local_cluster, workers)
        try:
            yield Executor(starting=started)
        finally:
            cluster, client = started.result() if started.exception() is None else (None, None)
            if client is not None:
                client.close()
            if cluster is not None:
                # On a starved machine the workers may outlast close()'s timeout: that must not hide the real
                # outcome (a cancel, an error); the nannies kill them anyway.
                with contextlib.suppress(TimeoutError, OSError):
                    cluster.close()


def _start_local_cluster(workers: int) -> tuple[Any, Any]:
    """(cluster, client) of `workers` local 1-thread worker processes; (None, None) where they fail to start."""
    import dask
    from distributed import Client, LocalCluster

    # os.environ is the process's: the nannies' changes are undone when the start ends (the caller's
    # thread starts no process meanwhile).
    with environ_kept(), dask.config.set(local_cluster_config()):
        try:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
        except RuntimeError as e:
            # e.g. a script without `if __name__ == "__main__":` guard, which spawned workers re-import
            log.warning("local Dask workers failed to start (%s); running the tasks here instead", e)
            return None, None
        try:
            return cluster, Client(cluster)
        except BaseException:
            cluster.close()
            raise


@contextlib.contextmanager
def environ_kept() -> Iterator[None]:
    """Undo what the block does to os.environ.

    Dask's nannies set their pre-spawn environment (OMP/MKL/OPENBLAS_NUM_THREADS=1, ...) in this
    process's os.environ before each worker start. Left there, every process spawned later (a job
    worker, a replay pool) would run MKL on 1 thread and differ from a run without the cluster in its
    last bits.
    """
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


@contextlib.contextmanager
def _connect(address: str):
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as e:
        raise ConfigError(f"cannot reach the Dask scheduler at '{address}' ({e}); start it with `dask scheduler` "
                          f"or unset {ENV_CLUSTER}") from None
    try:
        yield client
    finally:
        client.close()
