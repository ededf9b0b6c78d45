"""Colocation's device hand-off: on shared GPUs (`cluster.colocate=true`) the trainers and the vLLM engines take
turns, and each turn leaves the other as much memory as it can.

To the engines (new weights, then generation), in the order OpenRLHF and verl use:
    1. the trainers' optimizer states, fp32 master weights and gradient buffers go to host memory and their
       cached blocks are freed: AdamW's state exists only after the first step, once vLLM sized its KV cache;
    2. the engines wake their weights only;
    3. the new weights arrive (CUDA IPC needs a packed buffer on the trainer's GPU);
    4. the trainers free that buffer;
    5. the engines wake their KV cache.
To the trainers: the engines sleep (weights to host memory, KV cache dropped), the optimizer states return.

Turns change only when the other side needs the GPU: an episode's turns, dynamic sampling's rounds and an
evaluation after a sync all generate in one turn. Without colocation the engines keep their own devices and
only the weight sync runs.
"""
from __future__ import annotations

from typing import Callable

ENGINES, TRAINERS = "engines", "trainers"


class DeviceHandoff:
    def __init__(self, trainers: list, rollout, colocated: bool):
        """`trainers`: the groups that train (their optimizer states move); `rollout`: the policy's engines."""
        self.trainers, self.rollout, self.colocated = trainers, rollout, colocated
        self.holder = ENGINES  # colocated engines start after the trainers loaded, and start awake

    def to_engines(self, send: Callable[[], dict] | None = None) -> dict[str, float]:
        """The engines get the devices, with the policy's current weights when `send` is given (its stats
        returned)."""
        if not self.colocated or self.holder == ENGINES:  # the engines' devices are theirs already
            return send() if send else {}
        for group in self.trainers:
            group.offload_states()
        stats = {}
        if send is not None:
            self.rollout.wake_up(["weights"])
            stats = send()
            self.trainers[0].empty_cache()  # the policy's transfer buffer
            self.rollout.wake_up(["kv_cache"])
        else:
            self.rollout.wake_up()
        self.holder = ENGINES
        return stats

    def to_trainers(self) -> None:
        """The trainers get the devices back: the engines sleep, optimizer states return."""
        if not self.colocated or self.holder == TRAINERS:
            return
        self.rollout.sleep()
        for group in self.trainers:
            group.reload_states()
        self.holder = TRAINERS
