"""The reward server and RemoteReward over real HTTP on 127.0.0.1 (uvicorn and http.server in threads)."""

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
import uvicorn

from rlsys.rewards import RewardConfigError, RewardError, build_reward
from rlsys.rewards.remote import RemoteReward
from rlsys.rewards.server import create_app, resolve_token

pytestmark = pytest.mark.timeout(60)

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BYTES, MAX_BATCH = 4096, 8


class Recorder:
    """answer_match, plus failures and a slow path selected by the first prompt; counts calls and overlap."""

    def __init__(self):
        self.inner = build_reward([{"type": "rule", "name": "answer_match"}])
        self.calls = self.active = self.max_active = 0
        self.lock = threading.Lock()

    def __call__(self, prompts, completions, columns):
        with self.lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if prompts[:1] == ["raise-reward-error"]:
                raise RewardError("reward function 'judge' is down; restart it")
            if prompts[:1] == ["raise-other"]:
                raise ZeroDivisionError("division by zero")
            if prompts[:1] == ["slow"]:
                time.sleep(0.05)
            return self.inner(prompts, completions, columns)
        finally:
            with self.lock:
                self.active -= 1


def _bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="module")
def server():
    recorder = Recorder()
    app = create_app(recorder, token=TOKEN, max_request_bytes=MAX_BYTES, max_batch=MAX_BATCH)
    sock = _bound_socket()
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.monotonic() + 10
    while not uv.started:
        assert time.monotonic() < deadline, "reward server did not start"
        time.sleep(0.02)
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    yield url, recorder
    uv.should_exit = True
    thread.join(timeout=10)


class Stub:
    """A plain HTTP server answering POSTs from a script of (status, delay_s); counts requests."""

    def __init__(self, script):
        self.script, self.requests = list(script), 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub.requests += 1
                status, delay = stub.script[min(stub.requests, len(stub.script)) - 1]
                time.sleep(delay)
                body = b'{"rewards": [0.5]}' if status == 200 else b'{"error": "busy"}'
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client timed out and hung up
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _post(url, body=None, headers=AUTH, **kwargs):
    return httpx.post(f"{url}/score", json=body, headers=headers, **kwargs)


OK_BODY = {"prompts": ["2+2?", "3+3?"], "completions": ["4", "7"], "columns": {"answer": ["4", "6"]}}


def test_scores_with_token_and_through_client(server):
    url, _ = server
    response = _post(url, OK_BODY)
    assert response.status_code == 200
    assert response.json() == {"rewards": [1.0, 0.0], "terms": {"answer_match": [1.0, 0.0]}}
    # numpy columns are converted for JSON
    client = RemoteReward(url, token=TOKEN)
    assert client(["2+2?", "3+3?"], ["4", "7"], answer=np.array([4, 6])) == [1.0, 0.0]


def test_health_needs_no_token(server):
    assert httpx.get(f"{server[0]}/health").json() == {"status": "ok"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}])
def test_missing_or_wrong_token_is_401(server, headers):
    url, recorder = server
    calls = recorder.calls
    response = _post(url, OK_BODY, headers=headers)
    assert response.status_code == 401
    assert "token" in response.json()["error"]
    assert recorder.calls == calls


def test_client_with_wrong_token_fails_without_retrying(server):
    start = time.monotonic()
    with pytest.raises(RewardError, match="refused the token.*RLSYS_REWARD_TOKEN"):
        RemoteReward(server[0], token="wrong", backoff_s=10)(["p"], ["4"], answer=["4"])
    assert time.monotonic() - start < 5  # a retry would have slept 10 s
    with Stub([(401, 0)]) as stub:
        with pytest.raises(RewardError, match="token"):
            RemoteReward(stub.url, token="wrong", backoff_s=0.01)(["p"], ["c"])
        assert stub.requests == 1


def test_oversized_body_is_413_with_content_length(server):
    body = {"prompts": ["p"], "completions": ["x" * (MAX_BYTES + 100)]}
    response = _post(server[0], body)
    assert response.status_code == 413
    assert "serve.max_request_bytes" in response.json()["error"]


def test_oversized_chunked_body_is_413(server):
    def chunks():  # no Content-Length: the server has to count
        yield b'{"prompts": ["p"], "completions": ["'
        for _ in range(10):
            yield b"x" * 1024
        yield b'"]}'

    response = httpx.post(f"{server[0]}/score", content=chunks(), headers=AUTH)
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert "serve.max_request_bytes" in response.json()["error"]


def test_malformed_json_is_400(server):
    response = httpx.post(f"{server[0]}/score", content=b'{"prompts": [', headers=AUTH)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"prompts": ["p"]}, "completions"),
        ({"prompts": [1], "completions": ["c"]}, "prompts.0"),
        ({"prompts": ["p", "q"], "completions": ["c"]}, "prompts"),
        ({"prompts": ["p"], "completions": ["c"], "columns": {"answer": ["1", "2"]}}, "columns.answer"),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_bad_shapes_name_the_field(server, body, field):
    response = _post(server[0], body)
    assert 400 <= response.status_code < 500
    message = response.json()["error"]
    assert field in message and "\n" not in message


def test_too_many_completions_is_413(server):
    n = MAX_BATCH + 1
    response = _post(server[0], {"prompts": ["p"] * n, "completions": ["c"] * n})
    assert response.status_code == 413
    assert "serve.max_batch" in response.json()["error"]


@pytest.mark.parametrize(
    "prompt, message", [("raise-reward-error", "'judge' is down"), ("raise-other", "ZeroDivisionError")]
)
def test_reward_that_raises_is_500_and_the_client_retries(server, prompt, message):
    url, recorder = server
    response = _post(url, {"prompts": [prompt], "completions": ["c"]})
    assert response.status_code == 500
    assert message in response.json()["error"]
    assert "Traceback" not in response.text
    calls = recorder.calls
    with pytest.raises(RewardError, match=f"failed after 3 attempts.*HTTP 500.*{message}"):
        RemoteReward(url, token=TOKEN, max_retries=2, backoff_s=0.01)([prompt], ["c"])
    assert recorder.calls - calls == 3


def test_reward_calls_run_one_at_a_time(server):
    url, recorder = server
    recorder.max_active = 0
    body = {"prompts": ["slow"], "completions": ["4"], "columns": {"answer": ["4"]}}
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: _post(url, body), range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    assert recorder.max_active == 1


def test_client_retries_429_and_5xx_then_succeeds():
    with Stub([(429, 0), (503, 0), (200, 0)]) as stub:
        assert RemoteReward(stub.url, token=TOKEN, backoff_s=0.01)(["p"], ["c"]) == [0.5]
        assert stub.requests == 3


def test_client_times_out_after_all_attempts():
    with Stub([(200, 0.6)]) as stub:
        with pytest.raises(RewardError, match=r"after 3 attempts.*timed out after 0.3s"):
            RemoteReward(stub.url, timeout_s=0.3, max_retries=2, backoff_s=0.01)(["p"], ["c"])
        assert stub.requests == 3


def test_client_against_nothing_listening_names_url_and_fix():
    sock = _bound_socket()  # a port that is free, closed again so nothing listens there
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    start = time.monotonic()
    with pytest.raises(RewardError) as info:
        RemoteReward(url, max_retries=1, backoff_s=0.01)(["p"], ["c"])
    assert url in str(info.value) and "rlsys serve-reward" in str(info.value)
    assert "connection" in str(info.value).lower()
    assert time.monotonic() - start < 5


def test_unserialisable_column_names_the_column():
    with pytest.raises(RewardError, match="column 'meta'"):
        RemoteReward("http://127.0.0.1:9")(["p"], ["c"], meta=[object()])


def test_build_reward_remote_end_to_end(server):
    url, _ = server
    reward = build_reward([{"type": "remote", "url": url, "token": TOKEN, "weight": 2.0}])
    total, terms = reward(["2+2?", "3+3?"], ["4", "7"], {"answer": ["4", "6"]})
    assert total.tolist() == [2.0, 0.0]
    assert terms["remote"].tolist() == [1.0, 0.0]


def test_build_reward_remote_needs_url_and_judge_is_a_model_term():
    with pytest.raises(RewardConfigError, match="needs 'url'"):
        build_reward([{"type": "remote", "token": "secret"}])
    reward = build_reward([{"type": "judge", "weight": 0.5}])
    assert reward.terms == [] and reward.model_terms == [{"type": "judge", "weight": 0.5}]


def test_resolve_token(monkeypatch):
    monkeypatch.setenv("RLSYS_REWARD_TOKEN", "from-env")
    assert resolve_token("configured") == ("configured", False)
    assert resolve_token(None) == ("from-env", False)
    monkeypatch.delenv("RLSYS_REWARD_TOKEN")
    token, generated = resolve_token(None)
    assert generated and len(token) >= 32 and resolve_token(None)[0] != token
