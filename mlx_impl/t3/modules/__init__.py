from .cond_enc import T3Cond, T3CondEnc
from .learned_pos_emb import LearnedPositionEmbeddings
from .perceiver import AttentionBlock2, AttentionQKV, Perceiver
from .t3_config import T3Config
