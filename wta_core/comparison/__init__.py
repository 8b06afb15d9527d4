"""WTA beside three other attribution methods, each scored against the same retraining ground truth.

Methods: WTA (its score matrix comes from the `wta_scores` table), destination-only
retraining (`destination`), embedding similarity (`embedding`) and TracIn-style
gradient attribution over the LoRA weights (`gradient`). `metrics` defines the ground
truth and the metrics, and `report` builds the `method_comparison` rows, a Markdown
table and a bar chart. Every function is pure and nothing here imports Dagster.
"""

from wta_core.comparison.destination import destination_attribution, final_state_distances
from wta_core.comparison.embedding import (
    EMBEDDING_CLAP,
    EMBEDDING_MFCC_CHROMA,
    AudioEmbedding,
    embedding_attribution,
    fit_audio_embedding,
    mfcc_chroma_embedding,
    render_latents,
    similarity_matrix,
)
from wta_core.comparison.gradient import loss_gradients, tracin_attribution, tracin_clip_scores
from wta_core.comparison.method import (
    METHOD_DESTINATION,
    METHOD_TRACIN,
    METHOD_WTA,
    MethodScores,
    wta_method_scores,
    wta_retrainings,
)
from wta_core.comparison.metrics import (
    GROUND_TRUTH_DEFINITION,
    METRICS,
    LdsInputs,
    MethodEvaluation,
    RetrainingEffect,
    compare_methods,
    evaluate_method,
    lds_masks,
    linear_datamodeling_score,
    output_divergence,
    retraining_effect,
)
from wta_core.comparison.report import (
    COMPARISON_SCHEMA,
    COMPARISON_TABLE,
    best_methods,
    comparison_frame,
    comparison_markdown,
    comparison_plot,
    comparison_rows,
)

__all__ = [
    "COMPARISON_SCHEMA",
    "COMPARISON_TABLE",
    "EMBEDDING_CLAP",
    "EMBEDDING_MFCC_CHROMA",
    "GROUND_TRUTH_DEFINITION",
    "METHOD_DESTINATION",
    "METHOD_TRACIN",
    "METHOD_WTA",
    "METRICS",
    "AudioEmbedding",
    "LdsInputs",
    "MethodEvaluation",
    "MethodScores",
    "RetrainingEffect",
    "best_methods",
    "compare_methods",
    "comparison_frame",
    "comparison_markdown",
    "comparison_plot",
    "comparison_rows",
    "destination_attribution",
    "embedding_attribution",
    "evaluate_method",
    "final_state_distances",
    "fit_audio_embedding",
    "lds_masks",
    "linear_datamodeling_score",
    "loss_gradients",
    "mfcc_chroma_embedding",
    "output_divergence",
    "render_latents",
    "retraining_effect",
    "similarity_matrix",
    "tracin_attribution",
    "tracin_clip_scores",
    "wta_method_scores",
    "wta_retrainings",
]
