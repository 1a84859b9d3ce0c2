"""Evaluating architectures on benchmarks: the concurrent, resumable runner behind
``itas eval`` and the search (``evaluate``), its CLI driver (``run``), progress and
reports (``report``) and judge-scored grading through a judge agent (``judging``).
The datasets and scorers themselves are ``itas.benchmarks``."""
