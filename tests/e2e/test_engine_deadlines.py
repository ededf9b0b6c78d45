"""Every call into the rollout engines has a deadline, and an engine that fails its part of a weight transfer
stops the transfer at once (no 10-minute wait in a broadcast): real Ray actors that hang or raise."""
import time

import pytest

from rlsys import watchdog
from rlsys.actors.rollout import RolloutGroup, RolloutSpec, Sampling
from rlsys.actors.weight_sync import EngineCallFailed, _EngineClient
from tests.e2e.stand_in_engines import HangingEngine, SlowStartEngine


@pytest.fixture
def short_deadlines():
    watchdog.configure({kind: 2.0 for kind in watchdog.KINDS})
    yield
    watchdog.configure(watchdog.DEFAULTS)


def engines(cls):
    from rlsys.actors.group import Placement, create_placement

    placement = Placement(create_placement(1, gpus=0, cpus=1), [0], num_gpus=0, num_cpus=1)
    return RolloutGroup(cls, RolloutSpec(model_path="unused", device="cpu"), placement, name="rollout")


@pytest.mark.parametrize("call, setting", [
    (lambda g: g.wake_up(["weights"]), "watchdog.sync_s"),
    (lambda g: g.sleep(), "watchdog.sync_s"),
    (lambda g: g.prompt_logprobs([[1, 2, 3]]), "watchdog.forward_s"),
    (lambda g: g.generate([[1, 2]], Sampling()), "watchdog.generate_s"),
])
def test_a_hung_engine_call_stops_at_its_deadline(ray_cluster, short_deadlines, call, setting):
    group = engines(HangingEngine)
    try:
        group.wait_ready()
        began = time.monotonic()
        with pytest.raises(watchdog.Stalled, match=setting.replace(".", r"\.")):
            call(group)
        assert time.monotonic() - began < 30
    finally:
        group.kill()


def test_engines_that_never_finish_starting_stop_at_the_start_deadline(ray_cluster, short_deadlines):
    group = engines(SlowStartEngine)
    try:
        with pytest.raises(watchdog.Stalled, match=r"watchdog\.start_s"):
            group.wait_ready()
    finally:
        group.kill()


def test_a_failed_or_hung_transfer_call_aborts_the_transfer_and_names_the_call(ray_cluster):
    group = engines(HangingEngine)
    aborted = []
    client = _EngineClient(group.engines, deadline_s=2.0, on_failure=lambda: aborted.append(True))
    try:
        with pytest.raises(EngineCallFailed, match=r"transfer_start\(\) failed: .*no parameter named"):
            client.start_weight_update()
        began = time.monotonic()
        with pytest.raises(EngineCallFailed, match=r"transfer_update\(\) did not finish within \d+s \(watchdog.sync_s\)"):
            client.update_weights({"names": []})
        assert time.monotonic() - began < 30 and aborted == [True, True]
    finally:
        group.kill()
