"""Reading final answers out of model text: numbers, LaTeX math, option letters.

Shared by the benchmarks' scorers (``itas.benchmarks.scoring``), which grade an
answer against a reference, and by majority_vote, which compares candidates'
answers with each other; both must read a response the same way.
"""
