"""The main job end to end on a tiny split, with the real LM."""

import pytest

from eval.experiments.demo import run_demo


@pytest.mark.lm
def test_demo_scores_every_selector_and_reuses_its_index(tmp_path, capsys):
    kwargs = dict(suite="trec", n_test=16, pool_size=300, selectors=["similarity", "random"],
                  backend="chroma", workdir=tmp_path)
    rows = run_demo(**kwargs)
    first = capsys.readouterr().out
    methods = [row.method for row in rows]
    assert methods == ["zero-shot", "bm25 + similarity", "dense + similarity", "dense + random",
                       "kNN label vote (dense top-8, no LM)"]
    assert all(0.0 <= row.accuracy <= 1.0 and row.n == 16 for row in rows)
    assert "indexed 300 demonstrations into chroma" in first
    assert "| dense + similarity |" in first
    assert (tmp_path / "results.json").is_file()

    again = run_demo(**kwargs)
    assert "reusing the chroma index" in capsys.readouterr().out
    assert [row.accuracy for row in again] == [row.accuracy for row in rows]
