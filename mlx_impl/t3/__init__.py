"""T3 token generator (mirrors chatterbox/models/t3)."""
from .modules.cond_enc import T3Cond
from .modules.t3_config import T3Config
from .t3 import T3
