"""How the policy's new weights reach the rollout engines after each update (`rollout.weight_sync`).

    object_store  the full weights as safetensors buckets through Ray's object store: any device, any backend
    adapter       LoRA on vLLM: only the adapter (a few MB) moves; vLLM applies it as a LoRA request over the
                  base weights it loaded once, so nothing is merged or reloaded
    nccl          vLLM's weight-transfer API: the trainer's rank 0 broadcasts packed buckets to every engine
                  worker over one NCCL group (engines on GPUs of their own)
    ipc           vLLM's weight-transfer API over CUDA IPC handles (engines sharing the trainers' GPUs)

Every trainer rank runs `send` (ZeRO-3 gathers are collectives); only rank 0 talks to the engines.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import ray
import torch

from rlsys.actors.group import free_port
from rlsys.engine.weights import buckets, gathered, is_peft, iter_hf_weights

# the layers vLLM can apply a LoRA adapter to (the decoder's linear projections)
ADAPTER_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@dataclass(frozen=True)
class WeightSync:
    kind: str  # object_store | adapter | nccl | ipc (resolved, never auto)
    bucket_bytes: int = 64 * 2**20


def adapter_servable(lora) -> bool:
    """A LoRA adapter vLLM can apply itself."""
    return lora.enabled and set(lora.target_modules) <= ADAPTER_MODULES


def resolve(cfg, device: str) -> str:
    """`rollout.weight_sync`, with auto made concrete for this job's device, backend, LoRA and layout."""
    kind = cfg.rollout.weight_sync
    if kind != "auto":
        return kind
    if cfg.rollout.backend != "vllm":
        return "object_store"
    if adapter_servable(cfg.model.lora):
        return "adapter"
    if device == "cuda":
        return "ipc" if cfg.cluster.colocate else "nccl"
    return "object_store"


def problem(cfg, device: str) -> str | None:
    """Why the configured transport cannot serve this job, or None."""
    kind = resolve(cfg, device)
    if kind != "object_store" and cfg.rollout.backend != "vllm":
        return f"rollout.weight_sync={kind} needs rollout.backend=vllm; the hf backend takes object_store."
    if kind == "adapter" and not adapter_servable(cfg.model.lora):
        return (f"rollout.weight_sync=adapter sends a LoRA adapter: set model.lora.enabled=true with target "
                f"modules among {sorted(ADAPTER_MODULES)}, or rollout.weight_sync=object_store.")
    if kind in ("nccl", "ipc") and device != "cuda":
        return f"rollout.weight_sync={kind} moves weights between GPUs; on {device} use object_store (or auto)."
    if kind == "ipc" and not cfg.cluster.colocate:
        return "rollout.weight_sync=ipc needs engines on the trainers' GPUs: set cluster.colocate=true, or use nccl."
    return None


def sender(sync: WeightSync, engines: list, rank: int):
    return {"object_store": ObjectStoreSender, "adapter": AdapterSender,
            "nccl": NCCLSender, "ipc": IPCSender}[sync.kind](engines, rank, sync)


class ObjectStoreSender:
    """One object-store put and one call per bucket; the engines apply the full set at the end."""

    def __init__(self, engines: list, rank: int, sync: WeightSync):
        self.engines, self.rank, self.bucket_bytes = engines, rank, sync.bucket_bytes

    def send(self, module: torch.nn.Module, zero3: bool) -> dict[str, float]:
        from safetensors.torch import save

        sent = calls = 0
        if self.rank == 0:
            ray.get([e.begin_weight_update.remote() for e in self.engines])
        for bucket in buckets(iter_hf_weights(module, zero3), self.bucket_bytes):
            if self.rank == 0:
                payload = ray.put(save(bucket))
                ray.get([e.receive_bucket.remote(payload) for e in self.engines])
                sent += sum(t.numel() * t.element_size() for t in bucket.values())
                calls += 1
        if self.rank == 0:
            ray.get([e.finish_weight_update.remote() for e in self.engines])
        return {"sync_mb": sent / 2**20, "sync_buckets": float(calls)}


class AdapterSender:
    """The LoRA adapter as PEFT saves it (adapter_config.json + adapter_model.safetensors), as one payload."""

    def __init__(self, engines: list, rank: int, sync: WeightSync):
        self.engines, self.rank = engines, rank

    def send(self, module: torch.nn.Module, zero3: bool) -> dict[str, float]:
        if not is_peft(module):
            raise RuntimeError("rollout.weight_sync=adapter, but the policy has no LoRA adapter")
        lora = [p for n, p in module.named_parameters() if "lora_" in n]
        with gathered(lora, zero3), tempfile.TemporaryDirectory() as folder:
            if self.rank == 0:
                module.save_pretrained(folder)
                files = {f.name: f.read_bytes() for f in Path(folder).iterdir() if f.is_file()}
        if self.rank != 0:
            return {"sync_mb": 0.0, "sync_buckets": 0.0}
        payload = ray.put(files)
        ray.get([e.load_adapter.remote(payload) for e in self.engines])
        return {"sync_mb": sum(map(len, files.values())) / 2**20, "sync_buckets": 1.0}


class _EngineClient:
    """vLLM's weight-sync control plane (`VLLMWeightSyncClient`) over rlsys's engine actors: each call goes to
    every engine and waits for all of them."""

    def __init__(self, engines: list):
        self.engines = engines

    def _all(self, method: str, *args) -> None:
        ray.get([getattr(e, method).remote(*args) for e in self.engines])

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self._all("transfer_init", init_info)

    def start_weight_update(self) -> None:
        self._all("transfer_start")

    def update_weights(self, update_info) -> None:
        self._all("transfer_update", update_info)

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all("transfer_finish")


def _hf_source(module: torch.nn.Module, zero3: bool):
    """The weights as vLLM names them, full and on the trainer's GPU, as vLLM's `WeightSource`."""
    from vllm.distributed.weight_transfer import ParamMeta, WeightSource

    class HFWeightSource(WeightSource):
        def __init__(self):
            self.meta: list | None = None

        def metadata(self) -> list:
            if self.meta is None:  # one pass; under ZeRO-3 a collective every rank runs in the same order
                self.meta = [ParamMeta(n, t.dtype, tuple(t.shape)) for n, t in self]
            return self.meta

        def __iter__(self):
            return iter_hf_weights(module, zero3, on_device=True)

    return HFWeightSource()


class NCCLSender:
    """One NCCL group: the trainer's rank 0 is rank 0; engine i's tensor-parallel workers follow it at offset
    1 + i * tp. vLLM's dense NCCL trainer engine does the packed broadcast; the group is opened on the first
    send and kept for the run."""

    def __init__(self, engines: list, rank: int, sync: WeightSync):
        self.engines, self.rank, self.transfer = engines, rank, None

    def _connect(self, module: torch.nn.Module, zero3: bool):
        from vllm.distributed.weight_transfer.nccl_common import (NCCLWeightTransferInitInfo, trainer_init,
                                                                  worker_init_payload)
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerWeightTransferEngine

        client = _EngineClient(self.engines if self.rank == 0 else [])
        transfer = NCCLTrainerWeightTransferEngine(client=client, source=_hf_source(module, zero3),
                                                   is_sender=self.rank == 0)
        if self.rank != 0:
            return transfer
        tp = ray.get(self.engines[0].tensor_parallel_size.remote())
        address, port, world = ray.util.get_node_ip_address(), free_port(), 1 + len(self.engines) * tp
        joining = [e.transfer_init.remote(worker_init_payload(NCCLWeightTransferInitInfo(
            master_address=address, master_port=port, rank_offset=1 + i * tp, world_size=world, packed=True)))
            for i, e in enumerate(self.engines)]
        transfer.model_update_group = trainer_init({"master_address": address, "master_port": port,
                                                    "world_size": world})  # returns once every worker joined
        ray.get(joining)
        return transfer

    def send(self, module: torch.nn.Module, zero3: bool) -> dict[str, float]:
        if self.transfer is None:
            self.transfer = self._connect(module, zero3)
        self.transfer.send_weights()
        return _sent(self.transfer.source.metadata(), self.rank)


class IPCSender:
    """CUDA IPC: each trainer rank shares its GPU copy of the weights; each engine worker maps the one on its own
    GPU (vLLM's IPC trainer engine; the handles are gathered over the trainers' process group)."""

    def __init__(self, engines: list, rank: int, sync: WeightSync):
        self.engines, self.rank, self.transfer = engines, rank, None

    def send(self, module: torch.nn.Module, zero3: bool) -> dict[str, float]:
        if self.transfer is None:
            from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo, IPCTrainerWeightTransferEngine

            client = _EngineClient(self.engines if self.rank == 0 else [])
            self.transfer = IPCTrainerWeightTransferEngine.trainer_init(
                IPCTrainerInitInfo(rank=self.rank, packed=True), client=client, source=_hf_source(module, zero3))
        self.transfer.send_weights()
        return _sent(self.transfer.source.metadata(), self.rank)


def _sent(meta: list, rank: int) -> dict[str, float]:
    size = sum(torch.Size(m.shape).numel() * m.dtype.itemsize for m in meta)
    return {"sync_mb": size / 2**20 if rank == 0 else 0.0, "sync_buckets": 1.0}
