import numpy as np


def mel(*, sr, n_fft, n_mels=128, **_):
    """Zeros of the filterbank's shape: only the S3Tokenizer's constructor calls it on the GPU machine."""
    return np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
