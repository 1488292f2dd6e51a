"""PyTorch -> MLX weight conversion, one module per MLX component (kept apart from the model code)."""
