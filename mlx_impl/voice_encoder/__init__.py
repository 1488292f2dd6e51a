"""VoiceEncoder (chatterbox/models/voice_encoder) in MLX."""
from .config import VoiceEncConfig
from .voice_encoder import VoiceEncoder
