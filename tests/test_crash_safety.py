"""kill -9 in the middle of saving an index: the directory holds the old index or the new
one, complete, and loads."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import ricl

WRITER = textwrap.dedent("""
    import sys
    import ricl
    from eval.suites import load_suite

    out = sys.argv[1]
    suite = load_suite("trec", n_test=10, pool_size=1500, seed=0)
    builders = []
    for size in (1500, 1200):  # two different indexes, saved in turn
        corpus = ricl.Corpus.from_records(suite.pool[:size], input="text", output="label")
        builder = ricl.PromptBuilder(corpus, retriever="bm25", k=4, tokenizer=None)
        builder.index()
        builders.append(builder)
    saves = 0
    while True:
        builders[saves % 2].save(out)
        saves += 1
        print(saves, flush=True)
""")


def test_kill_9_during_index_save_leaves_a_loadable_index(tmp_path):
    out = tmp_path / "idx"
    rng = random.Random(0)
    for attempt in range(6):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(out)],
                                  stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
        assert writer.stdout.readline().strip()  # at least one complete save happened
        time.sleep(rng.uniform(0.0, 0.4))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        loaded = ricl.PromptBuilder.load(out)
        assert len(loaded.corpus) in (1500, 1200)
        assert loaded.retriever.search(["Who wrote Hamlet ?"], n=3).rows[0].size == 3
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "idx"]
    assert len(leftovers) <= 1  # at most the temp dir of the last killed writer
