r"""The next training batch, sampled on a background thread while the step runs this one.

:class:`Prefetcher` runs any iterator (a method's ``batches(...)``) in one background thread and
hands its items over through a bounded queue (``depth`` 1-2 items ahead), so neighbour sampling
and feature gathering of step :math:`t+1` overlap the forward/backward of step :math:`t`.

What keeps it exact:

* **Random streams.** The iterator runs concurrently with the step, which draws RReLU's slopes
  and dropout masks from torch's *global* generator; a batch iterator that also drew from a
  global stream would interleave with the step in a timing-dependent order. So only methods
  whose ``batches()`` draw solely from their own ``torch.Generator`` attributes are prefetched
  (:attr:`distgcl.methods.Method.prefetch_batches`, with those attributes named in
  :attr:`~distgcl.methods.Method.batch_generators`); every other method runs inline, as before.
* **Checkpoints.** The thread is ahead of the consumer: when step :math:`t` checkpoints, the
  batch generators have already drawn batch :math:`t+1` (or :math:`t+2`). Right after producing
  each item the thread records ``snapshot()`` (the generators' states), and :attr:`state` is the
  snapshot of the item the consumer took last, which is what a checkpoint must save: a resume
  from it draws exactly the batches the uninterrupted run consumed next.
* **Autograd.** The thread runs under ``torch.no_grad()`` and never calls a module; a batch is
  plain data (sampled ids, gathered feature rows).

Errors raised by the iterator re-raise in the consumer with their original traceback; leaving
early (``break``, an exception in the step, a checkpoint-and-exit) stops and joins the thread
(use the prefetcher as a context manager, or call :meth:`Prefetcher.close`).

**Host -> device copies.** On a CUDA run :func:`pin_batch` (in the thread) copies a batch's CPU
tensors into page-locked memory, so the step's ``.to(device, non_blocking=True)`` is an
asynchronous DMA that overlaps compute instead of a blocking staged copy; on CPU both are no-ops.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
from contextlib import nullcontext
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

_POLL_SECONDS = 0.05
"""How often a blocked producer re-checks the stop flag (bounds the time close() waits)."""


class _End:
    """The producer's last item: the source is exhausted."""


class _Failure:
    """The producer's last item when the source raised: the exception, traceback attached."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetcher(Generic[T]):
    """Iterate ``source`` on a background thread, up to ``depth`` items ahead.

    Args:
        source (iterable): the items (e.g. ``method.batches(data, epoch)``); iterated, and for a
            generator closed, on the background thread only.
        depth (int, optional): items produced ahead of the consumer, 1 or 2 (default: ``2``).
        prepare (callable, optional): applied to each item on the thread (e.g.
            :func:`pin_batch`) (default: none).
        snapshot (callable, optional): called on the thread right after each item is produced;
            :attr:`state` is its value for the item consumed last (default: none).
        device (torch.device, optional): a CUDA device is made the thread's current device, so
            what the thread allocates lands where the step runs (default: none).
    """

    def __init__(self, source: Iterable[T], depth: int = 2, *,
                 prepare: Callable[[T], T] | None = None,
                 snapshot: Callable[[], Any] | None = None,
                 device: torch.device | None = None) -> None:
        if depth not in (1, 2):
            raise ValueError(f"prefetch depth must be 1 or 2 (got {depth})")
        self.state: Any = None
        """``snapshot()`` as of the item the consumer took last (None before the first)."""
        self._source, self._prepare, self._snapshot = source, prepare, snapshot
        if device is not None and device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())  # the caller's GPU
        self._device = device
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, name="distgcl-prefetch",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ producer (thread)
    def _put(self, item: Any) -> bool:
        """Queue ``item``; False if the consumer stopped meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        cuda = self._device is not None and self._device.type == "cuda"
        it: Iterator[T] | None = None
        try:
            with torch.no_grad(), torch.cuda.device(self._device) if cuda else nullcontext():
                it = iter(self._source)
                for item in it:
                    if self._prepare is not None:
                        item = self._prepare(item)
                    snap = self._snapshot() if self._snapshot is not None else None
                    if not self._put((item, snap)):
                        return
            self._put(_End())
        except BaseException as exc:  # noqa: BLE001  (handed to the consumer, re-raised there)
            self._put(_Failure(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:  # a generator's finally blocks run here, on its own thread
                close()

    # ------------------------------------------------------------------ consumer
    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, _End):
            self._done = True
            self._thread.join()
            raise StopIteration
        if isinstance(item, _Failure):
            self._done = True
            self._thread.join()
            raise item.exc  # its __traceback__ (the producer's frames) is kept
        batch, self.state = item
        return batch

    def close(self) -> None:
        """Stop the thread (it finishes the item it is producing, then exits) and join it."""
        self._done = True
        self._stop.set()
        while True:  # free queue slots so a producer blocked in put() sees the flag
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()

    @property
    def alive(self) -> bool:
        """Whether the background thread still runs."""
        return self._thread.is_alive()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Inline(Generic[T]):
    """The same interface without a thread (prefetch off, or a method that cannot be
    prefetched): iterates ``source`` in the caller; :attr:`state` stays None (a checkpoint then
    reads the method's live generators, which are exactly as far as the consumer)."""

    def __init__(self, source: Iterable[T]) -> None:
        self.state: Any = None
        self._it = iter(source)

    def __iter__(self) -> Iterator[T]:
        return self._it

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Inline[T]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def method_batches(method: Any, data: Any, epoch: int, start_step: int = 0, *,
                   prefetch: bool = True, device: torch.device | None = None,
                   depth: int = 2) -> Prefetcher[Any] | Inline[Any]:
    """``method.batches(data, epoch, start_step=...)``, on a background thread when ``prefetch``
    and the method allows it (:attr:`~distgcl.methods.Method.prefetch_batches`), else inline.
    On a CUDA ``device`` the thread pins each batch (:func:`pin_batch`)."""
    source = method.batches(data, epoch, start_step=start_step)
    if not (prefetch and getattr(method, "prefetch_batches", False)):
        return Inline(source)
    dev = torch.device(device) if device is not None else None
    pin = (lambda b: pin_batch(b, dev)) if dev is not None and dev.type == "cuda" else None
    return Prefetcher(source, depth, prepare=pin, snapshot=method.batch_state, device=dev)


def _map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``obj`` with ``fn`` applied to every tensor inside it: tensors, tuples, lists, dicts,
    dataclasses (also frozen ones, rebuilt with :func:`dataclasses.replace`) and PyG ``Data``."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        items = [_map_tensors(o, fn) for o in obj]
        return type(obj)(items) if not hasattr(obj, "_fields") else type(obj)(*items)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: _map_tensors(getattr(obj, f.name), fn)
                   for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    apply = getattr(obj, "apply", None)
    if apply is not None and hasattr(obj, "stores"):  # torch_geometric Data / HeteroData
        return obj.apply(fn)  # in place, like Data.to()
    return obj


def pin_batch(batch: Any, device: torch.device | str | None) -> Any:
    """``batch`` with its CPU tensors in page-locked memory when ``device`` is CUDA (so the
    step's ``.to(device, non_blocking=True)`` is asynchronous); unchanged for any other device
    (CPU: there is no copy to speed up)."""
    if device is None or torch.device(device).type != "cuda":
        return batch
    return _map_tensors(batch, lambda t: t.pin_memory() if t.device.type == "cpu" else t)


def batch_to(batch: Any, device: torch.device | str) -> Any:
    """``batch`` with every tensor on ``device``; asynchronous from pinned memory
    (``non_blocking=True``; a no-op for tensors already there)."""
    dev = torch.device(device)
    return _map_tensors(batch, lambda t: t.to(dev, non_blocking=True))


__all__ = ["Inline", "Prefetcher", "batch_to", "method_batches", "pin_batch"]
