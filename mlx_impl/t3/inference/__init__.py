from .sampling import (
    GreedyDraw,
    MinPLogitsWarper,
    MLXDraw,
    RepetitionPenaltyLogitsProcessor,
    ReplayDraw,
    TopPLogitsWarper,
    apply_temperature,
    cfg_combine,
    inverse_cdf_token,
)
