# Open-Sora-Plan CausalVideoVAE (release architecture of configs/vae/causal_vae/release.json) trained with its
# LPIPSWithDiscriminator loss mapped onto the shared losses: L1 + LPIPS + 1e-6 KL, then a 2-D PatchGAN with
# the adaptive weight from iteration 2001 (disc_start of the release's loss_params).
#
#   torchrun --nproc_per_node 8 scripts/vae/train.py configs/vae/train/causal_vae.py --dataset.data_path DATA.csv
#
# Causal: 4k+1 frames -> k+1 latents (17 frames -> 5).
_base_ = ["../_base_/run_schedule.py"]

model = dict(
    type="causal_vae",
    from_pretrained=None,  # a release folder (config.json + weights) or a Lightning .ckpt
    hidden_size=128,
    hidden_size_mult=(1, 2, 4, 4),
    z_channels=4,
    embed_dim=4,
    num_res_blocks=2,
    double_z=True,
    attn_resolutions=(),
    encoder_attention="AttnBlock3D",
    decoder_attention="AttnBlock3D",
    encoder_spatial_downsample=("SpatialDownsample2x", "SpatialDownsample2x", "SpatialDownsample2x", ""),
    encoder_temporal_downsample=("TimeDownsample2x", "TimeDownsample2x", "", ""),
    decoder_spatial_upsample=("", "SpatialUpsample2x", "SpatialUpsample2x", "SpatialUpsample2x"),
    decoder_temporal_upsample=("", "", "TimeUpsample2x", "TimeUpsample2x"),
)

dataset = dict(
    type="video_text",
    transform_name="resize_crop",
    data_path=None,  # --dataset.data_path
    num_frames=17,
    sample_rate=1,
    image_size=(256, 256),
)
batch_size = 1
num_workers = 8
prefetch_factor = 2

# Release loss_params (configs/vae/causal_vae/release.json) through opensora_ae.losses.
# configs_from_lpips_with_discriminator: disc_start=2001, disc_weight=0.5, kl_weight=1e-6, logvar_init=0, LPIPS
# weight 1. The logvar stays fixed at logvar_init: LPIPSWithDiscriminator makes it an nn.Parameter, but the
# release's CausalVAEModel.configure_optimizers gives its Adam only the encoder, decoder and (post_)quant_conv
# parameters, so it never moved. learn_logvar=True trains it with the autoencoder optimizer (docs/training.md).
vae_loss_config = dict(
    perceptual_loss_weight=1.0,
    kl_loss_weight=1e-6,
    recon_loss_type="l1",
    logvar_init=0.0,
    learn_logvar=False,
)
discriminator = dict(
    type="N_Layer_discriminator_3D",
    input_nc=3,
    n_layers=3,
    conv_cls="conv2d",
    kernel_size=4,
    dropout=0.0,
    from_pretrained=None,
)
gen_loss_config = dict(gen_start=2001, disc_weight=0.5, disc_factor=1.0)
disc_loss_config = dict(disc_start=2001, disc_loss_type="hinge", disc_factor=1.0)
optim = dict(cls="Adam", lr=1e-5, betas=(0.5, 0.9), weight_decay=0.0)
optim_discriminator = dict(cls="Adam", lr=1e-5, betas=(0.5, 0.9), weight_decay=0.0)
lr_scheduler = dict(warmup_steps=0)
disc_lr_scheduler = dict(warmup_steps=0)

dtype = "bf16"
plugin = "ddp"
grad_clip = 1.0
grad_checkpoint = False

wandb_project = "causal_vae"
