"""opensora_ae: train, fine-tune, run and evaluate video autoencoders."""

__version__ = "0.1.0"
