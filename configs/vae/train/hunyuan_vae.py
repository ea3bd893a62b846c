# HunyuanVideo causal 3-D VAE (4x8x8, 16 latent channels) fine-tuned with the shared loop.
#
#   torchrun --nproc_per_node 8 scripts/vae/train.py configs/vae/train/hunyuan_vae.py \
#       --dataset.data_path DATA.csv --model.from_pretrained PATH/TO/hunyuan-video-t2v-720p/vae
#
# Causal: 4k+1 frames -> k+1 latents, so the buckets use 33-frame clips (and single frames).
_base_ = ["../_base_/run_schedule.py"]

model = dict(
    type="hunyuan_vae",
    from_pretrained=None,  # Tencent pytorch_model.pt, a diffusers folder or a .safetensors file
)

dataset = dict(
    type="video_text",
    transform_name="resize_crop",
    data_path=None,  # --dataset.data_path
    fps_max=24,
)
bucket_config = {
    "256px_ar1:1": {33: (1.0, 1)},
}
num_workers = 8
prefetch_factor = 2

optim = dict(cls="AdamW", lr=1e-5, eps=1e-8, weight_decay=0.0, betas=(0.9, 0.999))
lr_scheduler = dict(warmup_steps=500)

mixed_strategy = "mixed_video_image"
mixed_image_ratio = 0.2

dtype = "bf16"
plugin = "zero2"
grad_clip = 1.0
grad_checkpoint = True

wandb_project = "hunyuan_vae"

# Diagonal-Gaussian posterior: pixel L1 + LPIPS + a small KL, as in LDM-style VAE training.
vae_loss_config = dict(
    perceptual_loss_weight=0.1,
    kl_loss_weight=1e-6,
)
