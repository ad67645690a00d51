"""Evaluation: k-NN retrieval, ground truth under named protocols, recall@N, baselines, pictures."""

from gcl_jax.evaluation.baselines import thumbnail_descriptors
from gcl_jax.evaluation.knn import knn_search
from gcl_jax.evaluation.metrics import recall_at_n
from gcl_jax.evaluation.protocols import CityEval
from gcl_jax.evaluation.protocols import CityRanking
from gcl_jax.evaluation.protocols import CityResult
from gcl_jax.evaluation.protocols import evaluate_rankings
from gcl_jax.evaluation.protocols import evaluate_retrieval
from gcl_jax.evaluation.protocols import msls_ground_truth
from gcl_jax.evaluation.visualize import plot_recall_curves
from gcl_jax.evaluation.visualize import plot_retrievals
from gcl_jax.evaluation.visualize import results_markdown

__all__ = [
    "CityEval",
    "CityRanking",
    "CityResult",
    "evaluate_rankings",
    "evaluate_retrieval",
    "knn_search",
    "msls_ground_truth",
    "plot_recall_curves",
    "plot_retrievals",
    "recall_at_n",
    "results_markdown",
    "thumbnail_descriptors",
]
