# Reconstruct videos with an Open-Sora-Plan CausalVideoVAE (4x8x8, 4 latent channels): 17-frame 256x256 clips,
# every source frame, bf16 (Open-Sora-Plan's VAE evaluation settings).
#
#   torchrun --nproc_per_node 8 scripts/vae/inference.py configs/vae/inference/causal_vae.py \
#       --dataset.data_path DATA.csv --model.from_pretrained ./ckpts/Open-Sora-Plan-v1.1.0/vae
#
# from_pretrained: a release folder (config.json + weights) supplies the hyper-parameters. For a bare weights
# file or a Lightning .ckpt, add them here from configs/vae/causal_vae/v1_1.json (or release.json for v1.0).
# Causal: 4k+1 frames -> k+1 latents; height and width multiples of 8.

dtype = "bf16"
batch_size = 1
device = "auto"

num_frames = 17
resolution = (256, 256)
sample_rate = 1
dataset = dict(
    type="video_text",
    transform_name="resize_crop",
    data_path=None,  # --dataset.data_path
)

model = dict(
    type="causal_vae",
    from_pretrained=None,  # --model.from_pretrained (required)
    # Tiled inference for long or large clips (off: 17 frames at 256 px fit in memory).
    use_spatial_tiling=False,
    use_temporal_tiling=False,
    spatial_tile_size=256,
    temporal_tile_size=64,
    tile_overlap_factor=0.25,
)

save_dir = "samples/causal_vae"
layout = "v2"
crf = 10
save_latents = False
overwrite = False
