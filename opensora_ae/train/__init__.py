"""Training: the loop (``loop.train``), DDP/FSDP2 set-up, atomic checkpoints with exact resume, EMA and logs.

``scripts/vae/train.py CONFIG.py [--overrides]`` calls :func:`opensora_ae.train.loop.train`; see docs/training.md.
"""
