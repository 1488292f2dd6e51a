from .sampling import (
    Draw,
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
