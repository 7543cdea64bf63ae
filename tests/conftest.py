"""Shared fixtures: a small real corpus (TREC questions from StaICC) indexed once."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

import ricl
from eval.suites import load_suite


@pytest.fixture(scope="session")
def trec():
    return load_suite("trec", n_test=40, pool_size=600, seed=0)


@pytest.fixture(scope="session")
def trec_corpus(trec):
    return ricl.Corpus.from_records(trec.pool, input="text", output="label", labels=trec.labels)


@pytest.fixture(scope="session")
def trec_queries(trec):
    return [record["text"] for record in trec.test]


@pytest.fixture(scope="session")
def pool(trec):
    """A small real pool for LM feedback: 120 TREC questions."""
    return ricl.Corpus.from_records(trec.pool[:120], input="text", output="label", labels=trec.labels)


@pytest.fixture(scope="session")
def queries(trec):
    """Six TREC test questions with their answers (records, as a user would pass them)."""
    return [dict(record) for record in trec.test[:6]]


@pytest.fixture(scope="session")
def dense(trec_corpus):
    return ricl.DenseRetriever().index(trec_corpus)


@pytest.fixture(scope="session")
def bm25(trec_corpus):
    return ricl.BM25Retriever().index(trec_corpus)


@pytest.fixture(scope="session")
def tokenizer():
    from ricl.models import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def local():
    """The default LM in process, float32: the reference the served models are held to."""
    from ricl.lm import TransformersLM

    return TransformersLM(batch_size=8)


@pytest.fixture
def json_server():
    """Starts loopback HTTP servers that answer every POST with ``answer(request body)``
    (JSON both ways), for protocol shapes no real server here gives; returns each one's
    API root. Stopped in teardown."""
    servers = []

    def start(answer) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                body = json.dumps(answer(request)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/v1"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()
