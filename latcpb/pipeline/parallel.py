"""Blocks of frames backmapped by worker processes: in-process, a local process pool, or a dask.distributed cluster.

``BlockEngine(backend, n_workers, client)`` follows the MDAnalysis 2.8+ parallel-analysis convention
(``backend="serial" | "multiprocessing" | "dask"``, ``n_workers=``); ``client=`` is a ``distributed.Client`` of
a running cluster. ``engine.map(spec, blocks)`` yields ``BlockResult``s in block order to one consumer, with at
most ``max_in_flight`` blocks submitted and not yet consumed (bounded memory). Each worker process builds its
``Backmapper`` (loads the model) once and keeps it for every block and every input of the same options.
"""
from __future__ import annotations

import collections
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from latcpb.errors import LatcpbInputError
from latcpb.pipeline.blocks import DEFAULT_BLOCK_FRAMES, Block, BlockResult

BACKENDS = ("serial", "multiprocessing", "dask")


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs for the blocks of one input (picklable).

    universe: the CG MDAnalysis Universe or AtomGroup (pickled as MDAnalysis does: file-based readers reopen
    their files, so cluster workers need the same paths); start, stop, step: the run's frame selection (blocks
    are runs of consecutive selected frames; the chains are planned on the whole selection); backmapper:
    ``Backmapper`` keyword arguments except ``seed`` and ``note``; block_frames: frames per block (with a seed,
    ``Backmapper.iter_backmap`` restarts its random stream at every block, ``block_seed(seed, first frame)``);
    postprocess: optional picklable ``f(plan, result) -> result`` run on the worker (e.g. relaxation).
    """

    universe: object
    select: str
    source: str
    start: int | None
    stop: int | None
    step: int | None
    seed: int | None
    backmapper: dict
    block_frames: int = DEFAULT_BLOCK_FRAMES
    postprocess: Callable | None = None
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


# Worker-process state: the last Backmapper (by options) and the last run's plan (by key). Filled on first use.
_WORKER_STATE: dict = {}


def _no_note(text: str) -> None:
    """Workers stay silent: the notes of an input (left-out beads ...) are printed once by the main process."""


def worker_backmapper(options: dict, state: dict | None = None):
    """The ``Backmapper`` for ``options``, built (model loaded) once per process (or per ``state`` dict)."""
    from latcpb.backmapper import Backmapper

    state = _WORKER_STATE if state is None else state
    key = repr(sorted(options.items()))
    cached = state.get("backmapper")
    if cached is None or cached[0] != key:
        if state is _WORKER_STATE and _in_dask_worker():
            import torch   # one thread per worker process, as the local pool's workers (N workers use N cores)

            torch.set_num_threads(1)
        cached = (key, Backmapper(**options, seed=None, note=_no_note))
        state["backmapper"] = cached
    return cached[1]


def dask_worker_environ() -> dict:
    """dask's ``distributed.nanny.pre-spawn-environ`` without ``MALLOC_TRIM_THRESHOLD_`` (None unsets it): glibc
    with that variable set returns freed memory at once and maps every large tensor anew, which made backmapping
    in dask workers 3x slower than in a plain process (0.88 s -> 2.87 s per 64-frame block, geometric, 161
    residues; ``bench/parallel.py``). Workers started with ``dask worker`` get the same from a dask config file
    (docs/scale.md)."""
    import dask

    return {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), "MALLOC_TRIM_THRESHOLD_": None}


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker
        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def run_plan(spec: RunSpec, state: dict | None = None):
    """(universe, plan) of the run, made once per process: the run's ``BackmapPlan`` (``plan_trajectory`` of the
    whole selection, so every block on any worker has the same chains and atoms) and the Universe its beads
    belong to."""
    state = _WORKER_STATE if state is None else state
    backmapper = worker_backmapper(spec.backmapper, state)
    cached = state.get("run")
    if cached is None or cached[0] != spec.key:
        plan = backmapper.plan_trajectory(spec.universe, spec.select, spec.start, spec.stop, spec.step, spec.source)
        cached = (spec.key, spec.universe, plan)
        state["run"] = cached
    return cached[1], cached[2]


def compute_block(spec: RunSpec, block: Block, state: dict | None = None) -> BlockResult:
    """Backmap the block's frames (``Backmapper.iter_backmap`` over them, which seeds the block's own random
    stream from ``block_seed(seed, first frame)``)."""
    backmapper = worker_backmapper(spec.backmapper, state)
    universe, plan = run_plan(spec, state)
    backmapper.seed, backmapper.block_frames = spec.seed, spec.block_frames  # the block's own random stream
    batches = list(backmapper.iter_backmap(universe, start=block.first_frame, stop=block.frames[-1] + 1,
                                           step=spec.step, source=spec.source, plan=plan))
    frames = np.concatenate([b.frames for b in batches]).astype(np.int64)
    if tuple(int(f) for f in frames) != tuple(block.frames):
        raise LatcpbInputError(f"{spec.source}: frames {block.first_frame}-{block.frames[-1]}: read"
                               f" {len(frames)} frames where {len(block)} were expected")
    boxes = [b.dimensions for b in batches]
    steps = [b.steps for b in batches]
    result = BlockResult(block.index, frames, np.concatenate([b.times for b in batches]),
                         None if any(d is None for d in boxes) else np.concatenate(boxes),
                         np.concatenate([b.positions for b in batches]), samples=backmapper.samples,
                         steps=None if any(t is None for t in steps) else np.concatenate(steps),
                         dt=float(batches[0].dt), topology=batches[0].plan.topology,
                         trace_move=np.concatenate([b.trace_move for b in batches]),
                         trace_valid=np.concatenate([b.trace_valid for b in batches]))
    if spec.postprocess is not None:
        result = spec.postprocess(batches[0].plan, result)
    return result


def _compute_packed_block(key: str, packed: bytes, block: Block) -> BlockResult:
    """``compute_block`` in a pool worker with the ``RunSpec`` pickled once by the parent (``packed``): the worker
    unpickles it (which reopens the input files) only for the first block of a run, not for every block."""
    cached = _WORKER_STATE.get("spec")
    if cached is None or cached[0] != key:
        cached = (key, pickle.loads(packed))
        _WORKER_STATE["spec"] = cached
    return compute_block(cached[1], block)


def _init_pool_worker():
    """Pool workers compute with one thread each (N workers use N cores) and exit when the parent process dies
    (e.g. SIGKILL), instead of waiting forever for work."""
    import threading

    import torch

    torch.set_num_threads(1)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent.sentinel,), daemon=True).start()


def _exit_with_parent(sentinel):
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


class BlockEngine:
    """Runs ``compute_block`` over blocks with one backend; reusable for several inputs (workers stay warm).

    backend: "serial" (this process), "multiprocessing" (a pool of ``n_workers`` single-threaded processes) or
    "dask" (``client``, else a ``LocalCluster`` of ``n_workers`` single-threaded processes);
    max_in_flight: blocks submitted and not yet consumed (default 2 per worker).
    """

    def __init__(self, backend: str | None = None, n_workers: int | None = None, client=None,
                 max_in_flight: int | None = None):
        if backend is None:
            backend = "dask" if client is not None else ("serial" if (n_workers or 1) == 1 else "multiprocessing")
        if backend not in BACKENDS:
            raise LatcpbInputError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if client is not None and backend != "dask":
            raise LatcpbInputError(f"client= needs backend='dask' (got {backend!r})")
        if n_workers is not None and n_workers < 1:
            raise LatcpbInputError(f"--workers {n_workers}: must be at least 1")
        self.backend = backend
        self._cluster = None
        self._pool = None
        self._client = client
        self._own_client = False
        self._scattered = None
        self._state = {}  # the serial backend's model and run (kept with the engine, not the module)
        if backend == "serial":
            self.n_workers = 1
        elif backend == "multiprocessing":
            self.n_workers = n_workers or os.cpu_count() or 1
            self._pool = ProcessPoolExecutor(self.n_workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_pool_worker)
        else:
            self._start_dask(n_workers)
        self.max_in_flight = max_in_flight or 2 * self.n_workers

    def _start_dask(self, n_workers):
        import dask
        from distributed import Client, LocalCluster

        if self._client is None:
            # a nanny started earlier in this process may have left the variable in os.environ (it sets it there
            # before spawning): hidden while the workers start, then put back
            inherited = os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
            try:
                with dask.config.set({"distributed.nanny.pre-spawn-environ": dask_worker_environ()}):
                    self._cluster = LocalCluster(n_workers=n_workers or os.cpu_count() or 1, threads_per_worker=1,
                                                 processes=True, dashboard_address=None, silence_logs=logging.ERROR)
            finally:
                if inherited is not None:
                    os.environ["MALLOC_TRIM_THRESHOLD_"] = inherited
            self._client = Client(self._cluster)
            self._own_client = True
        self.n_workers = max(1, sum(self._client.nthreads().values()))

    @classmethod
    def connect(cls, address: str, max_in_flight: int | None = None) -> "BlockEngine":
        """An engine on the running dask.distributed scheduler at ``address`` (e.g. tcp://host:8786)."""
        from distributed import Client

        try:
            client = Client(address, timeout="20s")
        except (OSError, TimeoutError) as err:
            raise LatcpbInputError(f"--scheduler {address}: cannot connect ({str(err).strip()})") from err
        engine = cls("dask", client=client, max_in_flight=max_in_flight)
        engine._own_client = True  # closed with the engine; the cluster itself keeps running
        return engine

    def _shared(self, spec: RunSpec):
        """The dask future of ``spec``, scattered to the workers once per run."""
        if self._scattered is None or self._scattered[0] != spec.key:
            self._scattered = (spec.key, self._client.scatter(spec, broadcast=True, hash=False))
        return self._scattered[1]

    def map(self, spec: RunSpec, blocks) -> Iterator[BlockResult]:
        """Results of ``blocks`` in their order; an error in any block is raised here (the rest are cancelled)."""
        blocks = list(blocks)
        if self.backend == "serial":
            for block in blocks:
                yield compute_block(spec, block, self._state)
            return
        if self.backend == "multiprocessing":
            packed = pickle.dumps(spec)
            submit = lambda block: self._pool.submit(_compute_packed_block, spec.key, packed, block)  # noqa: E731
        else:
            shared = self._shared(spec)
            submit = lambda block: self._client.submit(compute_block, shared, block, pure=False)  # noqa: E731
        pending = collections.deque()
        queue = iter(blocks)
        try:
            for block in queue:
                pending.append(submit(block))
                if len(pending) >= self.max_in_flight:
                    break
            while pending:
                result = self._result(pending.popleft())
                for block in queue:  # refill before handing the result on: workers stay busy
                    pending.append(submit(block))
                    break
                yield result
        finally:
            for future in pending:
                future.cancel()

    def _result(self, future) -> BlockResult:
        try:
            return future.result()
        except BrokenProcessPool as err:
            raise RuntimeError("a worker process died (out of memory?); rerun with --resume to continue") from err

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
