# Open-Sora 1.2 VAE, training stage 3: end-to-end pixel loss, L1 + 0.1 LPIPS(VGG) + 1e-6 KL, on clips cut to a
# random length every step. Any length 1..33 works: the temporal VAE zero-pads each chunk at the front to a multiple
# of 4 frames (4k+1 frames -> k+1 latents) and drops the padding after decoding; random_length_rule="4k+1" restricts
# the lengths to 1, 5, ..., 33 instead of Open-Sora's uniform 1..33.
#
#   python scripts/vae/train.py configs/vae/train/stage3.py --dataset.data_path DATA.csv \
#       --model.from_pretrained outputs/vae_stage2/NNN-stage2/epochE-global_stepS   # a stage-2 checkpoint folder
_base_ = ["stage2.py"]

num_frames = 33
dataset = dict(num_frames=num_frames)

model = dict(
    from_pretrained=None,  # the stage-2 checkpoint
    freeze_vae_2d_decoder=False,  # the pixel loss trains the whole pipeline
)
# Plain (x_rec, posterior, z) forward: only pixel-space terms are used.
forward_kwargs = dict(_delete_=True)
loss_inputs = dict(_delete_=True)

# Open-Sora 1.2 flags: use_real_rec_loss=True, use_z_rec_loss=False, use_image_identity_loss=False.
vae_loss_config = dict(
    recon_loss_weight=1.0,
    perceptual_loss_weight=0.1,
    perceptual_net="vgg",
    kl_loss_weight=1e-6,
    latent_recon_loss_weight=0.0,
    identity_loss_weight=0.0,
)

mixed_strategy = "mixed_video_random"
mixed_image_ratio = 0.0
random_length_rule = "any"

outputs = "outputs/vae_stage3"
