# `make demo`: the small 4x8x8 causal KL VAE of ../_base_/demo_hunyuan_vae_model.py trained on the 128 px sample
# clips of `python -m opensora_ae.data.samples OUT --short-side 128` (the demo passes --dataset.data_path):
# random 5-frame 128x128 crops at the clips' own scale (the held-out clips are scored at that scale), two per step
# (batch 2 also puts CPU convolutions on oneDNN), pixel L1 plus a tiny KL term. No perceptual term, so the result
# does not depend on whether an LPIPS backbone is cached. Short clips (5 = 4+1 frames, two latent frames) buy many
# more steps per CPU-second than 9 or 17; the fully convolutional model then reconstructs the 17-frame held-out
# clips. Sized for 10 minutes on 2 idle CPU cores (docs/benchmarks.md, "Demo"); uses the GPU when there is one.
_base_ = ["../_base_/demo_hunyuan_vae_model.py", "../_base_/demo_train_run.py"]

dataset = dict(
    num_frames=5,
    image_size=(128, 128),
)
batch_size = 2

optim = dict(cls="AdamW", lr=2e-3, eps=1e-8, weight_decay=0.0, betas=(0.9, 0.99))
ema_decay = None

# The posterior mean is decoded while training (the KL term still regularises it), so the demo's only randomness
# is the seeded data order and crops; sampling the posterior measured no better (16.7 dB after 50 steps, 9 frames).
forward_kwargs = dict(sample_posterior=False)

vae_loss_config = dict(
    perceptual_loss_weight=0.0,
    kl_loss_weight=1e-7,
)

max_steps = 400
