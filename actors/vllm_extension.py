"""Methods added to every vLLM worker (`worker_extension_cls`) to take new weights from the trainer.

Buckets are collected and applied together: vLLM's `reload_weights` expects the full set (tied weights
included) and re-runs its post-load processing (repacking for the CPU kernels, quantisation, ...).
"""
from __future__ import annotations


class WeightReceiver:
    def rlsys_begin_update(self) -> None:
        self._rlsys_pending = {}

    def rlsys_receive_bucket(self, payload: bytes) -> None:
        from safetensors.torch import load

        self._rlsys_pending.update(load(payload))

    def rlsys_finish_update(self) -> int:
        weights = self._rlsys_pending
        self._rlsys_pending = {}
        self.model_runner.reload_weights(weights_iterator=iter(weights.items()), is_checkpoint_format=True)
        return len(weights)
