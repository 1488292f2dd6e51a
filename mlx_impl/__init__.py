"""MLX implementation of Chatterbox TTS, mirroring the original `chatterbox` package file for file.

Importing it changes nothing in the process: entry points that run the model call
`mlx_impl.backend.apply_mlx_defaults()` first (MLX's GPU settings, backend/device.py)."""
