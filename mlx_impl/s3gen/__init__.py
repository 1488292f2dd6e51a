"""S3Gen (chatterbox/models/s3gen) in MLX."""
