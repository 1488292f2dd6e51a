"""chatterbox/models/s3gen/utils in MLX."""
