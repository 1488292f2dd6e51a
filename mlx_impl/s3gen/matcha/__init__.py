"""MLX port of chatterbox/models/s3gen/matcha (U-Net blocks, diffusers-style transformer, BASECFM)."""
