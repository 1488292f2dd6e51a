"""CFM parameters of S3Gen (chatterbox/models/s3gen/configs.py)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CFMParams:
    sigma_min: float = 1e-06
    solver: str = "euler"
    t_scheduler: str = "cosine"
    training_cfg_rate: float = 0.2
    inference_cfg_rate: float = 0.7
    reg_loss_type: str = "l1"


CFM_PARAMS = CFMParams()
