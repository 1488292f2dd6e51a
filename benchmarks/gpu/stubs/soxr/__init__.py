"""Import stand-in (transformers imports soxr once it sees librosa); never called by the benchmark."""


def __getattr__(name):
    raise RuntimeError(f"soxr.{name} is not available on the GPU machine (import stub)")
