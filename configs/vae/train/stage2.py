# Open-Sora 1.2 VAE, training stage 2: as stage 1, but the 2-D VAE's encoder trains too and there is no identity
# loss.
#
#   python scripts/vae/train.py configs/vae/train/stage2.py --dataset.data_path DATA.csv \
#       --model.from_pretrained outputs/vae_stage1/NNN-stage1/epochE-global_stepS   # a stage-1 checkpoint folder
_base_ = ["stage1.py"]

model = dict(
    from_pretrained=None,  # the stage-1 checkpoint (folder or model.safetensors)
    freeze_vae_2d=False,
    # Only latent losses: the 2-D decoder gets no gradient in this stage (in the release too, where it stayed
    # unchanged); frozen, it is also kept out of the optimizer and of DDP's gradient reduction.
    freeze_vae_2d_decoder=True,
)

# Open-Sora 1.2 flags: use_real_rec_loss=False, use_z_rec_loss=True, use_image_identity_loss=False.
vae_loss_config = dict(identity_loss_weight=0.0)

outputs = "outputs/vae_stage2"
