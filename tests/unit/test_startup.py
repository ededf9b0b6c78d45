"""The start-up clock: the driver's phases in order, each role's slowest rank, one report after the first step."""
import json
import time

import pytest

from rlsys.logging.startup import ActorClock, StartupClock, slowest


def test_phases_roles_and_the_first_step_make_one_report(tmp_path, capsys):
    clock = StartupClock()
    clock.begin(time.time() - 1.0)  # the process started a second ago
    clock.lap("launch")
    time.sleep(0.02)
    clock.lap("setup")
    with clock.phase("ray"):
        time.sleep(0.02)
    clock.role("policy", [{"process": 1.0, "model": 2.0, "cpu": 3.0, "ready_at": clock.began + 4.0},
                          {"process": 1.5, "model": 1.0, "cpu": 2.0, "ready_at": clock.began + 5.0}])
    clock.first_step()
    metrics = {"train/loss": 1.0}
    clock.after_first_step(metrics, "grpo", str(tmp_path))

    assert metrics["perf/startup_launch_s"] >= 1.0 and metrics["perf/startup_setup_s"] >= 0.02
    assert metrics["perf/startup_ray_s"] >= 0.02
    assert metrics["perf/startup_s"] == pytest.approx(sum(v for k, v in metrics.items() if k in {
        "perf/startup_launch_s", "perf/startup_setup_s", "perf/startup_ray_s", "perf/startup_other_s"}), abs=1e-3)
    # the slowest rank of each phase, and when the last rank was ready
    assert metrics["perf/startup_policy_process_s"] == 1.5 and metrics["perf/startup_policy_model_s"] == 2.0
    assert metrics["perf/startup_policy_ready_s"] == pytest.approx(5.0)
    printed = capsys.readouterr().out
    assert printed.startswith("[grpo] start-up ") and "policy ready at 5.0" in printed
    assert json.loads((tmp_path / "timings.json").read_text())["perf/startup_s"] == pytest.approx(
        metrics["perf/startup_s"], abs=1e-3)

    later = {}
    clock.first_step()
    clock.after_first_step(later, "grpo", str(tmp_path))  # a later step (or a restart) reports nothing
    assert later == {}


def test_shutdown_is_added_to_the_timings_and_a_second_job_counts_from_the_first_ones_end(tmp_path):
    clock = StartupClock()
    clock.begin()
    clock.lap("setup")
    clock.first_step()
    clock.after_first_step({}, "sft", str(tmp_path))
    clock.finished(str(tmp_path))
    time.sleep(0.02)
    assert clock.shut_down(str(tmp_path)) >= 0.02
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert "perf/startup_s" in timings and timings["perf/run_s"] >= 0 and timings["perf/shutdown_s"] >= 0.02

    clock.next_job()  # a pipeline's next stage
    assert clock.began >= clock.last - 0.05 and not clock.reported and clock.phases == {}


def test_an_actor_clock_counts_from_its_process_start():
    clock = ActorClock()
    clock.lap("process")
    clock.lap("model")
    report = clock.report()
    assert report["process"] > 0 and report["cpu"] > 0 and report["ready_at"] <= time.time()
    assert slowest([{"a": 1.0}, {"a": 2.0}]) == {"a": 2.0}
