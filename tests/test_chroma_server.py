"""Dense retrieval against a real Chroma server on loopback."""

import sys
import time
from pathlib import Path

import pytest

import ricl
from retrievers import load_retriever, make_retriever
from retrievers.chroma_store import LocalChromaServer, free_port
from ricl.errors import ServerUnavailableError

CHROMA = Path(sys.executable).parent / "chroma"

pytestmark = [pytest.mark.server, pytest.mark.subprocess]


@pytest.fixture()
def server(tmp_path):
    if not CHROMA.exists():
        pytest.skip("the chroma command is not installed")
    running = LocalChromaServer(tmp_path / "chroma-data", command=CHROMA)
    running.start()
    yield running
    running.stop()


def test_index_query_restart_and_load_against_a_server(server, tmp_path, trec_corpus,
                                                       trec_queries, dense):
    url = f"chroma://127.0.0.1:{server.port}/trec-demos"
    remote = make_retriever(url).index(trec_corpus, embeddings=dense.embeddings)
    before = remote.search(trec_queries, n=8)
    exact = dense.search(trec_queries, n=8)
    assert [r.tolist() for r in before.rows] == [r.tolist() for r in exact.rows]
    remote.save(tmp_path / "idx")

    server.stop()
    server.start()  # same data directory: the collection must survive a restart
    loaded = load_retriever(tmp_path / "idx")
    after = loaded.search(trec_queries, n=8)
    assert [r.tolist() for r in after.rows] == [r.tolist() for r in before.rows]
    builder = ricl.PromptBuilder(loaded.corpus, retriever=loaded, k=3,
                                 template="Question: {input}\nAnswer type: {output}",
                                 tokenizer=None)
    assert len(builder.build(trec_queries[0]).demos) == 3


def test_a_down_server_is_a_clear_error_after_bounded_retries(trec_corpus, dense):
    url = f"chroma://127.0.0.1:{free_port()}/nobody-home"
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match="chroma run"):
        make_retriever(url).index(trec_corpus, embeddings=dense.embeddings)
    assert time.monotonic() - started < 15


def test_changes_on_a_server_equal_the_exact_index_of_the_final_corpus(server, tmp_path, trec,
                                                                      trec_corpus, trec_queries,
                                                                      dense):
    url = f"chroma://127.0.0.1:{server.port}/trec-changing"
    remote = make_retriever(url).index(trec_corpus, embeddings=dense.embeddings)
    extra = [{"id": f"new-{i}", "text": text, "label": "location"} for i, text in enumerate(
        ["Which river flows through Heidelberg ?", "Where is the Neckar ?",
         "What is the capital of Baden-Wurttemberg ?"])]
    remote.add(extra)
    remote.update([{"id": trec_corpus[5].id, "text": "Where do penguins live ?",
                    "label": "location"}])
    remote.remove([trec_corpus[i].id for i in (0, 7, 100)])
    exact = ricl.DenseRetriever().index(ricl.Corpus(list(remote.corpus),
                                                    input_names=("text",), output_name="label",
                                                    labels=trec.labels))
    queries = trec_queries + ["Where does the Neckar flow ?", "Where are penguins found ?"]
    ours, theirs = remote.search(queries, n=8), exact.search(queries, n=8)
    assert [r.tolist() for r in ours.rows] == [r.tolist() for r in theirs.rows]
    remote.save(tmp_path / "idx")
    loaded = load_retriever(tmp_path / "idx")
    assert [r.tolist() for r in loaded.search(queries, n=8).rows] == \
        [r.tolist() for r in theirs.rows]
    loaded.remove(["new-0"])  # a loaded server index changes the live collection
    assert "new-0" not in {loaded.corpus[int(r)].id for r in loaded.search(queries, n=8).rows[-2]}
