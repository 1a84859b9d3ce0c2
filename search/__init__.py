"""ITAS: inference-time architecture search with Bayesian optimization.

    from itas.search import run_search_cli
    summary = run_search_cli("configs/search/sim_gsm8k.yaml", out_dir="runs/sim")

Modules: ``config`` (the YAML), ``space`` (points <-> architecture specs, validity,
budget), ``strategies`` (bo, random, greedy), ``store`` (trials on disk, resume),
``deploy`` (agent topology on the broker, settings of reused agents checked),
``controller`` (the loop: trials, the finalists' race, held-out), ``stats`` (standard
errors, paired differences), ``runners`` (mesh or in-process evaluation), ``report``
(leaderboard, plot, summary, the pool and commands that reproduce the best), ``study``
(exhaustive in-process scoring for efficiency studies), ``run`` (the ``itas search``
entry point, Ctrl-C included).
"""

from itas.search.config import SearchConfig, load_search_config, parse_search_config
from itas.search.controller import SearchController, SearchOutcome
from itas.search.run import run_search, run_search_cli
from itas.search.space import Point, SearchSpace, point_key
from itas.search.store import Measurement, Record, TrialStore
from itas.search.strategies import BayesianSearch, GreedySearch, RandomSearch, make_strategy

__all__ = [
    "BayesianSearch",
    "GreedySearch",
    "Measurement",
    "Point",
    "RandomSearch",
    "Record",
    "SearchConfig",
    "SearchController",
    "SearchOutcome",
    "SearchSpace",
    "TrialStore",
    "load_search_config",
    "make_strategy",
    "parse_search_config",
    "point_key",
    "run_search",
    "run_search_cli",
]
