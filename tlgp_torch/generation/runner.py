"""Cached work units (npz files written atomically) and the process pool that runs them, with progress."""
from __future__ import annotations

import multiprocessing
import os
import pathlib
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable

import numpy as np

from tlgp_torch.generation.worker import THREAD_VARS, init_worker
from tlgp_torch.io.atomic import atomic_write

__all__ = ["Runner", "load_npz", "save_npz"]


def save_npz(path: pathlib.Path, key: str, arrays: dict[str, Any]) -> None:
    """np.savez to a temporary file, then rename (an interrupted write leaves no half file)."""
    atomic_write(path, lambda fh: np.savez(fh, key=np.array(key), **arrays))


def load_npz(path: pathlib.Path, key: str) -> dict[str, np.ndarray] | None:
    """Cached arrays when the file exists and was made with this key, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return {k: z[k] for k in z.files if k != "key"}
    except (OSError, ValueError, KeyError):
        return None


class Runner:
    """Runs work units in spawned worker processes (one thread each) or in this process, with progress."""

    def __init__(self, workers: int, in_process: bool) -> None:
        self.in_process = in_process or workers == 0
        self.workers = workers
        self._ex = None

    def __enter__(self) -> Runner:
        if not self.in_process:
            ctx = multiprocessing.get_context("spawn")
            self.queue = ctx.Queue()
            self._env = {v: os.environ.get(v) for v in THREAD_VARS}
            os.environ.update({v: "1" for v in THREAD_VARS})  # inherited by the spawned workers
            self._ex = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=init_worker,
                                           initargs=(self.queue,))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._ex is not None:
            if exc_type is not None:  # error or Ctrl-C: stop the workers we started now
                for proc in list((self._ex._processes or {}).values()):
                    proc.terminate()
            self._ex.shutdown(wait=True, cancel_futures=True)
            for var, value in self._env.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value

    def run(self, fn: Callable, specs: list[dict], on_done: Callable[[dict, dict], None], bar=None) -> None:
        """fn(spec) for every spec; on_done(spec, result) as each finishes; the first exception stops the rest."""
        seen: dict[int, int] = {}

        def tick(task: int, done: int) -> None:
            if bar is not None:
                bar.update(done - seen.get(task, 0))
            seen[task] = done

        if self.in_process:
            for spec in specs:
                on_done(spec, fn(spec, tick))
            return
        pending = {self._ex.submit(fn, spec): spec for spec in specs}
        while pending:
            finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            while not self.queue.empty():
                tick(*self.queue.get_nowait())
            for fut in finished:
                spec = pending.pop(fut)
                on_done(spec, fut.result())  # re-raises the worker's exception
