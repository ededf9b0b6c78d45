"""`rlsys serve-reward` as a user starts it: a generated token printed, rules scored over HTTP, a remote term."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rlsys.rewards import build_reward

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RLSYS_REWARD_TOKEN"}
    process = subprocess.Popen([sys.executable, "-m", "rlsys", "serve-reward", f"serve.port={port}",
                                f"output_dir={tmp_path}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=Path(__file__).resolve().parents[2], env=env)
    lines = []
    deadline = time.time() + 60
    while time.time() < deadline and not any("listening on" in line for line in lines):
        lines.append(process.stdout.readline())
    token = next(lines[i + 1].strip() for i, line in enumerate(lines) if line.startswith("bearer token"))
    url = f"http://127.0.0.1:{port}"
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    yield url, token, process
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=30)


def test_ctrl_c_stops_the_server_quietly(server):
    import signal

    *_, process = server
    process.send_signal(signal.SIGINT)
    said, _ = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in said and "CancelledError" not in said, said
    assert "reward server on port" in said and "stopped" in said


def test_served_rules_score_through_a_remote_term(server):
    url, token, _ = server
    assert httpx.post(f"{url}/score", json={"prompts": ["q"], "completions": ["4"]}).status_code == 401
    remote = build_reward([{"type": "remote", "url": url, "token": token}])
    total, _ = remote(["What is 2 + 2?", "What is 2 + 3?"], ["4", "6"], {"answer": ["4", "5"]})
    assert total.tolist() == [1.0, 0.0]
