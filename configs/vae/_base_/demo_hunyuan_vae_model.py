# The small HunyuanVideo-style causal KL VAE of `make demo`: 4x8x8 compression to 16 latent channels (the
# released model's latent), four stages of widths 8-16-32-64 with one resnet each and no mid-block attention
# (~2.0M parameters). The full-resolution stage dominates the cost, so it is the narrow one: 8-16-32-64 trains a
# step in ~0.8 CPU-s where 16-32-64-64 took ~1.9 (batch 4 x 5 x 64 x 64), for about the same PSNR per step.
# Shared by configs/vae/train/demo_hunyuan_vae.py and configs/vae/inference/demo_hunyuan_vae.py so that inference
# rebuilds the trained model.
model = dict(
    type="hunyuan_vae",
    latent_channels=16,
    block_out_channels=(8, 16, 32, 64),
    layers_per_block=1,
    norm_num_groups=8,
    mid_block_add_attention=False,
    time_compression_ratio=4,
    spatial_compression_ratio=8,
    from_pretrained=None,  # inference: --model.from_pretrained, the demo's checkpoint folder (required)
)
