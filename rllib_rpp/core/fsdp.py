"""FSDP2 for REINFORCE++ learners (torch.distributed.fsdp.fully_shard), no Ray in here.

- Each decoder layer is one FSDP unit and the module holding the LM is the root (embeddings,
  final norm and output layer), with a mixed-precision policy: parameters gathered in the compute
  dtype, gradients reduced in fp32, the sharded master weights (and so Adam's state) in
  param_dtype.
- Loading: only rank 0 reads the weights; the other ranks build the model on the meta device,
  and after sharding rank 0 broadcasts each tensor's shards (no full copy in every process).
- State is collective: full state dicts (model and optimizer) are gathered with every rank
  taking part, to CPU on rank 0; setting state gives every rank its shards of a full dict.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def decoder_layers(lm) -> list[torch.nn.Module]:
    """The LM's decoder layers: the classes transformers lists as `_no_split_modules`."""
    model = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"learner_strategy='fsdp': found no decoder layers in {type(model).__name__} "
                         f"(_no_split_modules={sorted(names)})")
    return layers


def is_sharded(module: torch.nn.Module) -> bool:
    return isinstance(module, FSDPModule)


def shard(root: torch.nn.Module, lm, *, device_type: str, param_dtype: str, compute_dtype: str) -> None:
    """fully_shard every decoder layer of `lm`, then `root` (the module whose forward runs the LM)."""
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    gather = getattr(torch, compute_dtype) if compute_dtype != param_dtype else None
    policy = MixedPrecisionPolicy(param_dtype=gather, reduce_dtype=torch.float32)
    for layer in decoder_layers(lm):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(root, mesh=mesh, mp_policy=policy)


def materialize_from_rank0(root: torch.nn.Module, full_state: dict | None, device) -> None:
    """After sharding: ranks > 0 (built on the meta device) allocate their shards, then rank 0's
    full state dict is broadcast shard by shard; buffers (e.g. rotary frequencies, which are
    not in state dicts) are broadcast whole."""
    if dist.get_rank() != 0:
        root.to_empty(device=device)
    set_model_state_dict(root, full_state if dist.get_rank() == 0 else {},
                         options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for buffer in root.buffers():
        dist.broadcast(buffer.data, src=0)


def full_model_state(root: torch.nn.Module) -> dict:
    """Every rank takes part; rank 0 gets the full CPU state dict, the others {}."""
    return get_model_state_dict(root, options=FULL)


def full_optimizer_state(root: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    return get_optimizer_state_dict(root, optimizer, options=FULL)


def load_full_model_state(root: torch.nn.Module, state: dict) -> None:
    set_model_state_dict(root, state, options=StateDictOptions(full_state_dict=True))


def load_full_optimizer_state(root: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    set_optimizer_state_dict(root, optimizer, state, options=StateDictOptions(full_state_dict=True))
