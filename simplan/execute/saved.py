"""What a forward pass leaves saved for backward: counted, and under sequence parallelism
kept as Megatron-LM keeps it.

``torch.autograd.graph.saved_tensors_hooks`` sees every tensor autograd saves. Parameters
(and views of them) are model state, not activations, and are skipped; tensors that share
storage (a view saved by two ops, Q/K/V slices) are counted once, at their storage's size.
Inside a non-reentrant ``torch.utils.checkpoint`` region autograd saves nothing (the
checkpoint's own hooks win); what the checkpoint keeps is the region's inputs, which
:func:`note` records (``apply.Checkpointed`` calls it).

Sequence parallelism: a column-parallel layer computes on its input all-gathered along
the sequence, and autograd would save that full-sequence tensor for the weight gradient.
Megatron-LM saves the rank's sequence shard instead and all-gathers it again in backward
(Korthikanti et al. 2022, Section 4.2.2; ``LinearWithGradAccumulationAndAsyncCommunication``),
which is what its activation memory, and the simulator's, counts. :func:`regather_inputs`
marks a module whose input DTensor parallelism gathers; while it runs, :func:`hooks`
saves every view of the gathered tensor as the shard, and the first backward use gathers
it once more for all the views (q, k and v share one).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

_ACTIVE: list["SavedBytes"] = []
_GATHERED: dict[int, "_Regather"] = {}
"""Storage of a gathered input -> its shard, while the module that consumes it runs."""


def _local(t: torch.Tensor) -> torch.Tensor:
    local = getattr(t, "_local_tensor", None)  # DTensor: the shard this rank holds
    return local if local is not None else t


def _is_param(t: torch.Tensor) -> bool:
    return isinstance(t, nn.Parameter) or isinstance(getattr(t, "_base", None), nn.Parameter)


def _storage_key(t: torch.Tensor) -> int:
    return _local(t).untyped_storage().data_ptr()


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


class _Regather:
    """A gathered input saved as its shard: gathered again at the first unpack, the result
    shared by the views unpacked after it (one all-gather per gathered input)."""

    def __init__(self, shard, full) -> None:
        self.shard = shard
        self.mesh, self.placements = full.device_mesh, full.placements
        self.numel = _local(full).numel()
        self.pending = 0
        self.full = None

    def covers(self, t: torch.Tensor) -> bool:
        """``t`` is the gathered tensor or a reshaped view of all of it (what a linear layer
        saves), so that it can be rebuilt from the gathered tensor by ``view``."""
        local = _local(t)
        return (type(t) is type(self.shard) and local.is_contiguous() and local.storage_offset() == 0
                and local.numel() == self.numel)

    def unpack(self, shape: torch.Size):
        if self.full is None:
            self.full = self.shard.redistribute(self.mesh, self.placements)
        self.pending -= 1
        full = self.full
        if self.pending == 0:
            self.full = None  # every view has been handed out
        return full if full.shape == shape else full.view(shape)


class _Packed:
    __slots__ = ("regather", "shape")

    def __init__(self, regather: _Regather, shape: torch.Size) -> None:
        self.regather, self.shape = regather, shape


def _pack(t):
    regather = _GATHERED.get(_storage_key(t)) if _GATHERED and isinstance(t, torch.Tensor) else None
    if regather is not None and regather.covers(t):
        regather.pending += 1
        if _ACTIVE:
            _ACTIVE[-1].add(regather.shard)
        return _Packed(regather, t.shape)
    if _ACTIVE:
        _ACTIVE[-1].add(t)
    return t


def _unpack(packed):
    if isinstance(packed, _Packed):
        return packed.regather.unpack(packed.shape)
    return packed


@contextmanager
def hooks():
    """The saved-tensor hooks of a training step (and of :func:`count_saved`)."""
    with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
        yield


def regather_inputs(module: nn.Module) -> None:
    """Save ``module``'s gathered input as the shard it was gathered from. Call after
    DTensor parallelism has registered its input hook on ``module`` (which turns the
    sequence shard into the full sequence): one hook before it sees the shard, one after
    it the gathered tensor; the entry lives while ``module`` runs."""
    seen: dict[str, object] = {}

    def before(_module, args):
        seen["shard"] = args[0]

    def after(_module, args):
        full, shard = args[0], seen.pop("shard")
        if full is not shard and getattr(shard, "placements", None) is not None:
            _GATHERED[_storage_key(full)] = _Regather(shard, full)
            seen["key"] = _storage_key(full)

    def done(_module, _args, _output):
        key = seen.pop("key", None)
        if key is not None:
            _GATHERED.pop(key, None)

    module.register_forward_pre_hook(before, prepend=True)
    module.register_forward_pre_hook(after)
    module.register_forward_hook(done)


@contextmanager
def count_saved():
    """``with count_saved() as c: loss = model(x)...`` then ``c.total_bytes``."""
    counter = SavedBytes()
    _ACTIVE.append(counter)
    try:
        with hooks():
            yield counter
    finally:
        _ACTIVE.pop()


def note(*tensors) -> None:
    """Record tensors kept alive for backward outside autograd (checkpoint inputs)."""
    if _ACTIVE:
        for t in tensors:
            _ACTIVE[-1].add(t)
