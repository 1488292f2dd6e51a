"""MLX port of chatterbox/models/s3gen/transformer (the conformer encoder of the flow)."""
