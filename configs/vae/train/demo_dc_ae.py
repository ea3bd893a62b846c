# A tiny Video DC-AE (3 stages, 4x4x4 compression, ~0.5M parameters; the small case of benchmarks/bench_train_step.py,
# formerly `make demo`) trained for 200 steps on the sample clips of `python -m opensora_ae.data.samples OUT`.
# Uses the GPU when there is one; on CPU it is sized for 2 cores. Without a cached LPIPS VGG backbone the
# perceptual term is dropped with a one-line message (skip_missing_perceptual).
_base_ = ["../_base_/demo_dc_ae_model.py"]

dataset = dict(
    type="video_text",
    transform_name="resize_crop",
    data_path="outputs/demo/data/train.csv",
    num_frames=8,
    image_size=(32, 32),
)
batch_size = 1
num_workers = 0

optim = dict(cls="AdamW", lr=1e-3, eps=1e-8, weight_decay=0.0, betas=(0.9, 0.98))
lr_scheduler = dict(warmup_steps=20)
grad_clip = 1.0
ema_decay = 0.99

vae_loss_config = dict(
    perceptual_loss_weight=0.1,
    kl_loss_weight=0,
)
skip_missing_perceptual = True

dtype = "fp32"
plugin = "ddp"
device = "auto"
seed = 42
outputs = "outputs/demo"
epochs = 1000
max_steps = 200
log_every = 10
ckpt_every = 100
keep_n_latest = 2
wandb = False
