"""Count the activation bytes a forward pass leaves saved for backward.

``torch.autograd.graph.saved_tensors_hooks`` sees every tensor autograd saves. Parameters
(and views of them) are model state, not activations, and are skipped; tensors that share
storage (a view saved by two ops, Q/K/V slices) are counted once, at their storage's size.
Inside a non-reentrant ``torch.utils.checkpoint`` region autograd saves nothing (the
checkpoint's own hooks win); what the checkpoint keeps is the region's inputs, which
:func:`note` records (``apply.Checkpointed`` calls it).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

_ACTIVE: list["SavedBytes"] = []


def _local(t: torch.Tensor) -> torch.Tensor:
    local = getattr(t, "_local_tensor", None)  # DTensor: the shard this rank holds
    return local if local is not None else t


def _is_param(t: torch.Tensor) -> bool:
    return isinstance(t, nn.Parameter) or isinstance(getattr(t, "_base", None), nn.Parameter)


class SavedBytes:
    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def add(self, t: torch.Tensor) -> None:
        if not isinstance(t, torch.Tensor) or _is_param(t):
            return
        storage = _local(t).untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()

    @property
    def total_bytes(self) -> int:
        return sum(self.storages.values())


@contextmanager
def count_saved():
    """``with count_saved() as c: loss = model(x)...`` then ``c.total_bytes``."""
    counter = SavedBytes()

    def pack(t):
        counter.add(t)
        return t

    _ACTIVE.append(counter)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield counter
    finally:
        _ACTIVE.pop()


def note(*tensors) -> None:
    """Record tensors kept alive for backward outside autograd (checkpoint inputs)."""
    if _ACTIVE:
        for t in tensors:
            _ACTIVE[-1].add(t)
