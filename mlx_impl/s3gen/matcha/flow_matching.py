"""BASECFM (chatterbox/models/s3gen/matcha/flow_matching.py): the base of S3Gen's CFM."""
from __future__ import annotations

import mlx.nn as nn


class BASECFM(nn.Module):
    def __init__(self, n_feats: int, cfm_params, n_spks: int = 1, spk_emb_dim: int = 128):
        super().__init__()
        self.n_feats = n_feats
        self.n_spks = n_spks
        self.spk_emb_dim = spk_emb_dim
        self.solver = cfm_params.solver
        self.sigma_min = getattr(cfm_params, "sigma_min", 1e-4)
        self.estimator = None
