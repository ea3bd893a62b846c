# The tiny Video DC-AE (3 stages, 4x4x4 compression, ~0.5M parameters), shared by
# configs/vae/train/demo_dc_ae.py and configs/vae/inference/demo_dc_ae.py so that inference rebuilds
# the trained model.
model = dict(
    type="dc_ae",
    latent_channels=16,
    width_list=(16, 32, 64),
    encoder_depth_list=(1, 1, 1),
    decoder_depth_list=(1, 1, 1),
    encoder_block_types=("ResBlock", "ResBlock", "EViTS5_GLU"),
    decoder_block_types=("ResBlock", "ResBlock", "EViTS5_GLU"),
    temporal_downsample=(True, True, False),
    attention_head_dim=16,
    from_pretrained=None,  # inference: --model.from_pretrained, the demo's checkpoint folder (required)
)
