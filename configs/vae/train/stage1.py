# Open-Sora 1.2 VAE, training stage 1 (configs/vae/train/stage1.py of Open-Sora v1.2.0).
# The 2-D SDXL VAE is frozen; the temporal VAE learns to reconstruct its latents (L1 between the spatial latent
# and the temporal VAE's reconstruction of it) and, on single-frame steps, to pass an image's latent through
# unchanged (identity loss). 17-frame clips, 20% of the steps single images.
#
#   python scripts/vae/train.py configs/vae/train/stage1.py --dataset.data_path DATA.csv \
#       --model.vae_2d_pretrained PATH/TO/pixart_sigma_sdxlvae_T5_diffusers   # local folder (its vae/ subfolder)
num_frames = 17
image_size = (256, 256)

dataset = dict(
    type="video_text",
    data_path=None,  # CSV, folder or video file: --dataset.data_path
    num_frames=num_frames,
    sample_rate=1,
    image_size=image_size,
)

model = dict(
    type="opensora_v1_2_vae",
    vae_2d_pretrained=None,  # local diffusers SDXL VAE folder; stage 1 needs trained 2-D weights
    from_pretrained=None,
    freeze_vae_2d=True,
    micro_frame_size=17,
    micro_batch_size=4,
)
# The pipeline returns its intermediates; the latent losses read them (x_rec is decoded without a graph, for
# logging only, since no pixel loss is used in this stage).
forward_kwargs = dict(return_stages=True, pixel_grad=False)
loss_inputs = dict(spatial_latent="x_z", spatial_latent_rec="x_z_rec", temporal_latent="z_raw")

# Open-Sora 1.2 flags: use_real_rec_loss=False, use_z_rec_loss=True, use_image_identity_loss=True.
# The KL was only ever added together with the pixel loss, so it is logged but not optimised here.
vae_loss_config = dict(
    recon_loss_weight=0.0,
    latent_recon_loss_weight=1.0,
    identity_loss_weight=1.0,
    kl_loss_weight=0.0,
    perceptual_loss_weight=0.1,  # used only when recon_loss_weight > 0
    perceptual_net="vgg",
)

mixed_strategy = "mixed_video_image"
mixed_image_ratio = 0.2

# Acceleration. Open-Sora 1.2 trained with ColossalAI ZeRO-2; here DDP: image batches are drawn per rank, so at a
# step some ranks hold single frames and others 17-frame clips, which changes how often the pipeline calls its
# blocks (per-frame micro-batches, 17-frame chunks), and FSDP2 ("zero2") needs every rank to call every sharded
# block equally often. (Stage 3's random clip lengths are the same on every rank; it inherits DDP all the same,
# since a file that fails to read shrinks one rank's batch and with it its number of micro-batches.)
num_workers = 16
dtype = "bf16"
grad_checkpoint = True
plugin = "ddp"

# Optimisation
optim = dict(cls="HybridAdam", lr=1e-5, eps=1e-8, weight_decay=0.0, adamw_mode=True)
lr_scheduler = dict(warmup_steps=0)
grad_clip = 1.0
batch_size = 1

# Others
seed = 42
outputs = "outputs/vae_stage1"
wandb = False
epochs = 100  # adjust to the dataset size
log_every = 1
ckpt_every = 1000
load = None
