# Video DC-AE (Open-Sora 2.0, dc-ae-f32t4c128) trained from scratch: configs/vae/train/video_dc_ae.py of Open-Sora 2.0.
#
#   torchrun --nproc_per_node 8 scripts/vae/train.py configs/vae/train/video_dc_ae.py --dataset.data_path DATA.csv
#
# Then the discriminator phase: configs/vae/train/video_dc_ae_disc.py --model.from_pretrained <checkpoint>.

# ============
# model config
# ============
model = dict(
    type="dc_ae",
    model_name="dc-ae-f32t4c128",
    from_pretrained=None,  # weights only (a .safetensors file or a checkpoint folder); --load resumes a run
)

# ============
# data config
# ============
dataset = dict(
    type="video_text",
    transform_name="resize_crop",
    data_path=None,  # CSV (column `path`), folder or video file: --dataset.data_path
    fps_max=24,
)
bucket_config = {
    "256px_ar1:1": {32: (1.0, 1)},  # {resolution: {num_frames: (keep probability, batch size per GPU)}}
}
num_workers = 12
prefetch_factor = 2

# ============
# train config
# ============
optim = dict(cls="HybridAdam", lr=5e-5, eps=1e-8, weight_decay=0.0, adamw_mode=True, betas=(0.9, 0.98))
lr_scheduler = dict(warmup_steps=0)

mixed_strategy = "mixed_video_image"
mixed_image_ratio = 0.2  # 1:4 single-frame batches

dtype = "bf16"
plugin = "zero2"  # FSDP2 fully_shard, parameters kept gathered between forward and backward
grad_clip = 1.0
grad_checkpoint = False

seed = 42
outputs = "outputs"
epochs = 100
log_every = 10
ckpt_every = 3000
keep_n_latest = 50
ema_decay = 0.99
wandb = False
wandb_project = "dcae"

# ============
# loss config
# ============
vae_loss_config = dict(
    perceptual_loss_weight=0.5,
    kl_loss_weight=0,
)
