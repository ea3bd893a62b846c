# `make demo`: reconstruct the held-out sample clips with the tiny Video DC-AE trained by
# configs/vae/train/demo_dc_ae.py (same model, same 8-frame 32x32 clips), losslessly so that the metrics
# measure the model only.
#
#   python scripts/vae/inference.py configs/vae/inference/demo_dc_ae.py \
#       --model.from_pretrained outputs/demo/train/epoch*-global_step*   # a checkpoint folder of the demo run

dtype = "fp32"
batch_size = 2
device = "auto"

num_frames = 8
resolution = (32, 32)
dataset = dict(
    type="video_text",
    transform_name="resize_crop",
    data_path="outputs/demo/data/heldout.csv",
)

# Must stay equal to the `model` of configs/vae/train/demo_dc_ae.py (tests/test_inference.py checks it).
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
    from_pretrained=None,  # --model.from_pretrained: the demo's checkpoint folder (required)
)

save_dir = "outputs/demo/recon"
layout = "v2"
crf = 0  # lossless libx264rgb
save_latents = False
overwrite = False
