"""Evaluation: k-NN retrieval, ground truth under named protocols, recall@N, baselines, pictures.

`mesh_knn` (exact k-NN on the device mesh) and `extract` import JAX: import them as submodules.
"""

from gcl_jax.evaluation.baselines import thumbnail_descriptors
from gcl_jax.evaluation.cache import DescriptorCache
from gcl_jax.evaluation.cache import cache_fields
from gcl_jax.evaluation.cache import cache_key
from gcl_jax.evaluation.knn import knn_search
from gcl_jax.evaluation.metrics import recall_at_n
from gcl_jax.evaluation.pca import PCAWhitening
from gcl_jax.evaluation.pca import learn_pca_whitening
from gcl_jax.evaluation.pca import whiten_cities
from gcl_jax.evaluation.protocols import PROTOCOLS
from gcl_jax.evaluation.protocols import CityEval
from gcl_jax.evaluation.protocols import CityRanking
from gcl_jax.evaluation.protocols import CityResult
from gcl_jax.evaluation.protocols import concat_tables
from gcl_jax.evaluation.protocols import evaluate_rankings
from gcl_jax.evaluation.protocols import evaluate_retrieval
from gcl_jax.evaluation.protocols import load_sim_h5
from gcl_jax.evaluation.protocols import msls_ground_truth
from gcl_jax.evaluation.protocols import tokyotm_month
from gcl_jax.evaluation.report import per_query_csv
from gcl_jax.evaluation.report import predictions_text
from gcl_jax.evaluation.report import read_predictions
from gcl_jax.evaluation.report import submission_text
from gcl_jax.evaluation.report import write_per_query_csv
from gcl_jax.evaluation.report import write_predictions
from gcl_jax.evaluation.report import write_results
from gcl_jax.evaluation.visualize import plot_recall_curves
from gcl_jax.evaluation.visualize import plot_retrievals
from gcl_jax.evaluation.visualize import results_markdown

__all__ = [
    "PROTOCOLS",
    "CityEval",
    "CityRanking",
    "CityResult",
    "DescriptorCache",
    "PCAWhitening",
    "cache_fields",
    "cache_key",
    "concat_tables",
    "evaluate_rankings",
    "evaluate_retrieval",
    "knn_search",
    "learn_pca_whitening",
    "load_sim_h5",
    "msls_ground_truth",
    "per_query_csv",
    "plot_recall_curves",
    "plot_retrievals",
    "predictions_text",
    "read_predictions",
    "recall_at_n",
    "results_markdown",
    "submission_text",
    "thumbnail_descriptors",
    "tokyotm_month",
    "whiten_cities",
    "write_per_query_csv",
    "write_predictions",
    "write_results",
]
