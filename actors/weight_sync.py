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

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import ray
import torch

from rlsys.actors.group import free_port
from rlsys.engine.weights import buckets, gathered, hf_weight_meta, is_peft, iter_hf_weights, largest_weight_bytes

# the layers vLLM can apply a LoRA adapter to (the decoder's linear projections)
ADAPTER_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@dataclass(frozen=True)
class WeightSync:
    kind: str  # object_store | adapter | nccl | ipc (resolved, never auto)
    bucket_bytes: int = 64 * 2**20  # rollout.weight_sync_bucket_mb: object-store buckets, NCCL and IPC buffers
    deadline_s: float | None = None  # watchdog.sync_s: each call into the engines (None: no deadline)


def transfer_buffer_bytes(bucket_bytes: int, largest_weight: int) -> int:
    """NCCL's and IPC's packed buffer: the configured bucket, grown to the largest weight (vLLM's IPC producer
    refuses a tensor larger than its buffer, and a Qwen2.5-7B embedding alone is 1.09 GB)."""
    return max(bucket_bytes, largest_weight)


def adapter_servable(lora) -> bool:
    """A LoRA adapter vLLM can apply itself."""
    return lora.enabled and set(lora.target_modules) <= ADAPTER_MODULES


def resolve(cfg, device: str, colocated: bool | None = None) -> str:
    """`rollout.weight_sync`, with auto made concrete for this job's device, backend, LoRA and layout
    (`colocated`: whether the engines share the trainers' GPUs; cluster.colocate unless the job says)."""
    kind = cfg.rollout.weight_sync
    if kind != "auto":
        return kind
    if cfg.rollout.backend != "vllm":
        return "object_store"
    if adapter_servable(cfg.model.lora):
        return "adapter"
    if device == "cuda":
        return "ipc" if (cfg.cluster.colocate if colocated is None else colocated) else "nccl"
    return "object_store"


def problem(cfg, device: str, colocated: bool | None = None) -> str | None:
    """Why the configured transport cannot serve this job's layout, or None (checked before any actor starts)."""
    colocated = cfg.cluster.colocate if colocated is None else colocated
    kind = resolve(cfg, device, colocated)
    if kind != "object_store" and cfg.rollout.backend != "vllm":
        return f"rollout.weight_sync={kind} needs rollout.backend=vllm; the hf backend takes object_store."
    if kind == "adapter" and not adapter_servable(cfg.model.lora):
        return (f"rollout.weight_sync=adapter sends a LoRA adapter: set model.lora.enabled=true with target "
                f"modules among {sorted(ADAPTER_MODULES)}, or rollout.weight_sync=object_store.")
    if kind in ("nccl", "ipc") and device != "cuda":
        return f"rollout.weight_sync={kind} moves weights between GPUs; on {device} use object_store (or auto)."
    if kind == "nccl" and colocated:
        return ("rollout.weight_sync=nccl cannot reach engines on the trainers' own GPUs (NCCL refuses two ranks "
                "on one GPU: 'Duplicate GPU'): use ipc (or auto) with cluster.colocate=true.")
    if kind == "ipc" and not colocated:
        if cfg.cluster.colocate:  # a job that places its engines apart whatever the cluster says (online DPO)
            return (f"rollout.weight_sync=ipc shares GPU memory with engines on the trainers' GPUs, but `rlsys "
                    f"{cfg.job}` puts its engines on GPUs of their own: use nccl (or auto).")
        return "rollout.weight_sync=ipc needs engines on the trainers' GPUs: set cluster.colocate=true, or use nccl."
    if kind == "ipc" and (alloc := expandable_segments()):
        return (f"rollout.weight_sync=ipc cannot share memory from expandable segments (PYTORCH_CUDA_ALLOC_CONF="
                f"{alloc}; pytorch #165685): unset it, or use rollout.weight_sync=object_store.")
    return None


def moe_problem(cfg, model_path: str, device: str) -> str | None:
    """Why new weights cannot reach this job's engines for a mixture-of-experts policy, or None.

    On CPU neither engine takes an MoE's new weights (measured with vLLM 0.32): vLLM's CPU MoE kernels prepack
    the experts at load, and reloading in place leaves them stale and the layer wrong (logprobs off by 0.13 nats
    after re-sending unchanged weights); transformers keeps the experts fused, under other names than the ones
    sent. Sampling from such engines would train on another policy's samples, silently."""
    import json

    config = json.loads((Path(model_path) / "config.json").read_text())
    experts = max(config.get(k) or 0 for k in ("num_experts", "num_local_experts", "n_routed_experts"))
    if experts and device == "cpu":
        return (f"{model_path} is a mixture of experts ({experts} experts), and on CPU the rollout engines cannot "
                f"take its updated weights (vLLM's CPU MoE kernels do not reload in place): train it with pretrain, "
                f"sft, dpo or rm here, and RL on GPUs.")
    return None


def expandable_segments() -> str | None:
    """This process's PYTORCH_CUDA_ALLOC_CONF when it turns on expandable segments, whose memory CUDA IPC
    cannot share."""
    alloc = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
    return alloc if "expandable_segments:true" in alloc.replace(" ", "").lower() else None


def weight_sync(cfg, device: str, colocated: bool | None = None) -> WeightSync:
    """The job's transport with its bucket size and deadline."""
    deadline = cfg.watchdog.sync_s
    return WeightSync(resolve(cfg, device, colocated), int(cfg.rollout.weight_sync_bucket_mb * 2**20),
                      deadline if deadline > 0 else None)


def sender(sync: WeightSync, engines: list, rank: int):
    return {"object_store": ObjectStoreSender, "adapter": AdapterSender,
            "nccl": NCCLSender, "ipc": IPCSender}[sync.kind](engines, rank, sync)


class ObjectStoreSender:
    """One object-store put and one call per bucket; the engines apply the full set at the end."""

    def __init__(self, engines: list, rank: int, sync: WeightSync):
        self.engines, self.rank, self.bucket_bytes = engines, rank, sync.bucket_bytes
        self.client = _EngineClient(engines, sync.deadline_s)

    def send(self, module: torch.nn.Module, zero3: bool) -> dict[str, float]:
        from safetensors.torch import save

        sent = calls = 0
        if self.rank == 0:
            self.client.call_all("begin_weight_update")
        for bucket in buckets(iter_hf_weights(module, zero3), self.bucket_bytes):
            if self.rank == 0:
                self.client.call_all("receive_bucket", ray.put(save(bucket)))
                sent += sum(t.numel() * t.element_size() for t in bucket.values())
                calls += 1
        if self.rank == 0:
            self.client.call_all("finish_weight_update")
        return {"sync_mb": sent / 2**20, "sync_buckets": float(calls)}


class AdapterSender:
    """The LoRA adapter as PEFT saves it (adapter_config.json + adapter_model.safetensors), as one payload."""

    def __init__(self, engines: list, rank: int, sync: WeightSync):
        self.engines, self.rank = engines, rank
        self.client = _EngineClient(engines, sync.deadline_s)

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
        self.client.call_all("load_adapter", ray.put(files))
        return {"sync_mb": sum(map(len, files.values())) / 2**20, "sync_buckets": 1.0}


class EngineCallFailed(RuntimeError):
    """An engine refused or did not finish its part of a weight transfer."""


class _EngineClient:
    """vLLM's weight-sync control plane (`VLLMWeightSyncClient`) over rlsys's engine actors: each call goes to
    every engine and waits for all of them, up to the sync deadline. A call that fails or runs past it runs
    `on_failure` first: over NCCL the trainer is blocked in a broadcast the engines will never join, and only
    aborting the communicator lets it return (vLLM checks the engines' call only once, before broadcasting)."""

    def __init__(self, engines: list, deadline_s: float | None, on_failure: Callable[[], None] = lambda: None):
        self.engines, self.deadline_s, self.on_failure = engines, deadline_s, on_failure

    def call_all(self, method: str, *args) -> None:
        began = time.monotonic()
        try:
            ray.get([getattr(e, method).remote(*args) for e in self.engines], timeout=self.deadline_s)
        except Exception as err:  # noqa: BLE001 - re-raised with what failed
            self.on_failure()
            late = isinstance(err, ray.exceptions.GetTimeoutError)
            what = (f"did not finish within {time.monotonic() - began:.0f}s (watchdog.sync_s)" if late
                    else f"failed: {str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__}")
            raise EngineCallFailed(f"weight sync: the rollout engines' {method}() {what}") from err

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self.call_all("transfer_init", init_info)

    def start_weight_update(self) -> None:
        self.call_all("transfer_start")

    def update_weights(self, update_info) -> None:
        self.call_all("transfer_update", update_info)

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self.call_all("transfer_finish")


def _hf_source(module: torch.nn.Module, zero3: bool):
    """The weights as vLLM names them, full and on the trainer's GPU, as vLLM's `WeightSource`."""
    from vllm.distributed.weight_transfer import ParamMeta, WeightSource

    class HFWeightSource(WeightSource):
        def __init__(self):
            self.meta: list | None = None

        def metadata(self) -> list:
            if self.meta is None:  # from the parameters' full shapes: nothing is gathered
                self.meta = [ParamMeta(*m) for m in hf_weight_meta(module)]
            return self.meta

        def __iter__(self):
            return iter_hf_weights(module, zero3, on_device=True)

    return HFWeightSource()


def nccl_init_infos(address: str, port: int, num_engines: int, tp: int, buffer_bytes: int) -> tuple[dict, list]:
    """The trainer's and each engine's side of one NCCL group: the trainer's rank 0 is rank 0, engine i's
    tensor-parallel workers follow at 1 + i * tp. Both sides get the same packed-buffer geometry from here: if
    the sizes differed, the two would cut the stream differently and the broadcast would hang."""
    from vllm.distributed.weight_transfer.nccl_common import NCCLWeightTransferInitInfo, worker_init_payload

    wire = {"packed": True, "packed_buffer_size_bytes": buffer_bytes, "packed_num_buffers": 2}
    world = 1 + num_engines * tp
    trainer = {"master_address": address, "master_port": port, "world_size": world, **wire}
    workers = [worker_init_payload(NCCLWeightTransferInitInfo(master_address=address, master_port=port,
                                                              rank_offset=1 + i * tp, world_size=world, **wire))
               for i in range(num_engines)]
    return trainer, workers


class NCCLSender:
    """One NCCL group over the trainer's rank 0 and every engine worker (nccl_init_infos); vLLM's dense NCCL
    trainer engine does the packed broadcast. The group is opened on the first send and kept for the run."""

    def __init__(self, engines: list, rank: int, sync: WeightSync):
        self.engines, self.rank, self.sync, self.transfer = engines, rank, sync, None

    def _abort(self) -> None:
        """Unblock a broadcast the engines will not join: the communicator is destroyed (ncclCommAbort)."""
        group = getattr(self.transfer, "model_update_group", None)
        if group is not None:
            group.destroy()
            self.transfer.model_update_group = None

    def _connect(self, module: torch.nn.Module, zero3: bool):
        from vllm.distributed.weight_transfer.nccl_common import trainer_init
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerWeightTransferEngine

        buffer = transfer_buffer_bytes(self.sync.bucket_bytes, largest_weight_bytes(module))
        client = _EngineClient(self.engines if self.rank == 0 else [], self.sync.deadline_s, self._abort)
        transfer = NCCLTrainerWeightTransferEngine(client=client, source=_hf_source(module, zero3),
                                                   is_sender=self.rank == 0, packed=True,
                                                   packed_buffer_size_bytes=buffer, packed_num_buffers=2)
        if self.rank != 0:
            return transfer
        tp = ray.get(self.engines[0].tensor_parallel_size.remote(), timeout=self.sync.deadline_s)
        trainer, workers = nccl_init_infos(ray.util.get_node_ip_address(), free_port(), len(self.engines), tp, buffer)
        joining = [e.transfer_init.remote(info) for e, info in zip(self.engines, workers)]
        transfer.model_update_group = trainer_init(trainer)  # returns once every worker joined
        ray.get(joining, timeout=self.sync.deadline_s)
        return transfer

    def send(self, module: torch.nn.Module, zero3: bool) -> dict[str, float]:
        if self.transfer is None:
            self.transfer = self._connect(module, zero3)
        try:
            self.transfer.send_weights()
        except Exception:
            self.transfer = None  # the group is unusable after a failed transfer
            raise
        return _sent(self.transfer.source.metadata(), self.rank)


class IPCSender:
    """CUDA IPC: each trainer rank shares its GPU copy of the weights; each engine worker maps the one on its own
    GPU (vLLM's IPC trainer engine; the handles are gathered over the trainers' process group). One packed
    buffer, the size of a bucket or of the largest weight, is reused for every chunk."""

    def __init__(self, engines: list, rank: int, sync: WeightSync):
        self.engines, self.rank, self.sync, self.transfer = engines, rank, sync, None
        if alloc := expandable_segments():  # the trainer's environment may differ from the driver's
            raise RuntimeError(f"rollout.weight_sync=ipc cannot share memory from expandable segments "
                               f"(PYTORCH_CUDA_ALLOC_CONF={alloc} in the trainer's environment): unset it.")

    def send(self, module: torch.nn.Module, zero3: bool) -> dict[str, float]:
        if self.transfer is None:
            from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo, IPCTrainerWeightTransferEngine

            buffer = transfer_buffer_bytes(self.sync.bucket_bytes, largest_weight_bytes(module))
            client = _EngineClient(self.engines if self.rank == 0 else [], self.sync.deadline_s)
            self.transfer = IPCTrainerWeightTransferEngine.trainer_init(
                IPCTrainerInitInfo(rank=self.rank, packed=True, packed_buffer_size_bytes=buffer), client=client,
                source=_hf_source(module, zero3))
        self.transfer.send_weights()
        return _sent(self.transfer.source.metadata(), self.rank)


def _sent(meta: list, rank: int) -> dict[str, float]:
    size = sum(torch.Size(m.shape).numel() * m.dtype.itemsize for m in meta)
    return {"sync_mb": size / 2**20 if rank == 0 else 0.0, "sync_buckets": 1.0}
