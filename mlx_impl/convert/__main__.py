"""`python -m mlx_impl.convert`: the hub's PyTorch checkpoint -> the single-file MLX layout (convert/cli.py)."""
import sys

from .cli import main

sys.exit(main())
