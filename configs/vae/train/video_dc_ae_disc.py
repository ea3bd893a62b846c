# Video DC-AE discriminator phase (Open-Sora 2.0 configs/vae/train/video_dc_ae_disc.py): fine-tune a trained
# DC-AE with a 3-D PatchGAN, starting from its weights and a fresh discriminator.
#
#   torchrun --nproc_per_node 8 scripts/vae/train.py configs/vae/train/video_dc_ae_disc.py \
#       --dataset.data_path DATA.csv --model.from_pretrained outputs/000-video_dc_ae/epoch0-global_step60000
_base_ = ["video_dc_ae.py"]

discriminator = dict(
    type="N_Layer_discriminator_3D",
    from_pretrained=None,
    input_nc=3,
    n_layers=5,
    conv_cls="conv3d",
)
disc_lr_scheduler = dict(warmup_steps=0)

# gen_start / disc_start count optimizer iterations (one iteration = one AE step + one discriminator step).
gen_loss_config = dict(
    gen_start=0,
    disc_weight=0.05,
)
disc_loss_config = dict(
    disc_start=0,
    disc_loss_type="hinge",
)

optim_discriminator = dict(cls="HybridAdam", lr=1e-4, eps=1e-8, weight_decay=0.0, adamw_mode=True, betas=(0.9, 0.98))

grad_checkpoint = True
model = dict(
    disc_off_grad_ckpt=True,  # keep the decoder's output block out of checkpointing (adaptive GAN weight)
)
