"""One retry policy for every server: bounded tries, then an error that says what to do."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from ricl.errors import ServerResponseError, ServerUnavailableError
from ricl.transport import JSONClient, with_retries


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next (status, body, seconds to wait) of the server's script."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.seen.append(self.path)
        status, body, wait = self.server.script.pop(0) if self.server.script else (200, {"ok": True}, 0)
        time.sleep(wait)
        raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting: as it should
            pass

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    httpd.script, httpd.seen = [], []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def client(**overrides) -> JSONClient:
    settings = {"server": "the test server", "remedy": "Start it.", "slow_remedy": "Wait longer.",
                "timeout": 5.0, "delays": (0.0, 0.0, 0.0)}
    return JSONClient(**{**settings, **overrides})


def url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1/completions"


def test_a_model_still_loading_is_retried_until_it_answers(server):
    server.script = [(503, {"error": "loading"}, 0), (502, {}, 0), (200, {"answer": 42}, 0)]

    assert client().request("POST", url(server), {"prompt": "x"}) == {"answer": 42}
    assert len(server.seen) == 3


def test_an_error_status_is_a_response_error_at_once_with_the_servers_message(server):
    server.script = [(404, {"error": {"message": "no such route"}}, 0)]

    with pytest.raises(ServerResponseError, match="answered HTTP 404: no such route") as caught:
        client().request("POST", url(server), {})
    assert caught.value.status == 404 and len(server.seen) == 1


def test_an_answer_that_is_not_json_is_a_response_error(server):
    server.script = [(200, b"<html>proxy</html>", 0)]

    with pytest.raises(ServerResponseError, match="did not answer JSON"):
        client().request("POST", url(server), {})


def test_a_slow_server_is_not_retried(server):
    server.script = [(200, {}, 1.0)]

    with pytest.raises(ServerUnavailableError, match="did not answer in time.*Wait longer"):
        client(timeout=0.2).request("POST", url(server), {})
    assert len(server.seen) == 1


def test_retries_are_bounded_and_end_in_what_to_do():
    calls = []

    def refused():
        calls.append(1)
        raise ConnectionRefusedError("refused")

    with pytest.raises(ServerUnavailableError,
                       match=r"Could not reach the index for a query after 3 tries \(refused\)\. Start it\."):
        with_retries(refused, server="the index", what="a query", remedy="Start it.",
                     is_transient=lambda e: isinstance(e, ConnectionError), delays=(0.0, 0.0))
    assert len(calls) == 3


def test_an_error_a_retry_cannot_cure_passes_at_once_and_hooks_run_before_each_retry():
    calls, reconnects = [], []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionResetError("dropped")
        raise KeyError("not a connection problem")

    with pytest.raises(KeyError):
        with_retries(flaky, server="s", what="w", remedy="r", delays=(0.0, 0.0),
                     is_transient=lambda e: isinstance(e, ConnectionError),
                     before_retry=lambda: reconnects.append(1))
    assert len(calls) == 2 and len(reconnects) == 1
