# A tiny Video DC-AE (3 stages, 4x4x4 compression, ~0.5M parameters; the small case of benchmarks/bench_train_step.py,
# formerly `make demo`) trained for 200 steps on the sample clips of `python -m opensora_ae.data.samples OUT`.
# Uses the GPU when there is one; on CPU it is sized for 2 cores. Without a cached LPIPS VGG backbone the
# perceptual term is dropped with a one-line message (skip_missing_perceptual).
_base_ = ["../_base_/demo_dc_ae_model.py", "../_base_/demo_train_run.py"]

dataset = dict(
    num_frames=8,
    image_size=(32, 32),
)
batch_size = 1

optim = dict(cls="AdamW", lr=1e-3, eps=1e-8, weight_decay=0.0, betas=(0.9, 0.98))
ema_decay = 0.99

vae_loss_config = dict(
    perceptual_loss_weight=0.1,
    kl_loss_weight=0,
)
skip_missing_perceptual = True

max_steps = 200
