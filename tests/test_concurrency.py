from concurrent.futures import ThreadPoolExecutor

import ricl


def test_eight_threads_building_on_one_builder_match_sequential_calls(trec_corpus, trec_queries,
                                                                      tokenizer):
    queries = trec_queries[:32]
    for retriever in ("dense", "bm25"):
        # a fresh builder: indexing itself happens under the threads' first calls
        shared = ricl.PromptBuilder(trec_corpus, retriever=retriever, selector="dpp", k=6,
                                    template="Question: {input}\nAnswer type: {output}",
                                    max_tokens=160, tokenizer=tokenizer)
        with ThreadPoolExecutor(max_workers=8) as pool:
            concurrent = list(pool.map(shared.build, queries))
        sequential = [shared.build(q) for q in queries]
        assert [p.text for p in concurrent] == [p.text for p in sequential]
        assert [p.demo_ids for p in concurrent] == [p.demo_ids for p in sequential]
