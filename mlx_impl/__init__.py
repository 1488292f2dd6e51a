"""MLX implementation of Chatterbox TTS, mirroring the original `chatterbox` package file for file."""
