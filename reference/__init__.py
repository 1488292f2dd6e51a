"""Drives the ORIGINAL PyTorch Chatterbox (chatterbox-tts 0.1.7): synthetic checkpoints and the
reference export. Intermediates are captured by hooks and wrappers around the original modules;
nothing of the original's math is re-implemented here."""
