# Reconstruct videos with the HunyuanVideo causal 3-D VAE (4x8x8, 16 latent channels), as Open-Sora 2.0's
# configs/vae/inference/hunyuanvideo_vae.py: 512x512 clips of 97 frames at most 16 fps, spatial and temporal
# tiling (256 px, 64 frames = 17 latents, overlap 0.25), bf16.
#
#   torchrun --nproc_per_node 8 scripts/vae/inference.py configs/vae/inference/hunyuanvideo_vae.py \
#       --dataset.data_path DATA.csv --model.from_pretrained ./ckpts/hunyuan_vae.safetensors
#
# Causal: 4k+1 frames -> k+1 latents (97 -> 25); height and width multiples of 8.

dtype = "bf16"
batch_size = 1
device = "auto"

num_frames = 97
resolution = (512, 512)
dataset = dict(
    type="video_text",
    transform_name="resize_crop",
    data_path=None,  # --dataset.data_path
    fps_max=16,
)

model = dict(
    type="hunyuan_vae",
    from_pretrained=None,  # --model.from_pretrained: Tencent pytorch_model.pt, a diffusers folder or .safetensors
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    latent_channels=16,
    scaling_factor=0.476986,
    shift_factor=0.0,
    time_compression_ratio=4,
    use_spatial_tiling=True,
    use_temporal_tiling=True,
    spatial_tile_size=256,
    temporal_tile_size=64,
    tile_overlap_factor=0.25,
)

save_dir = "samples/hunyuanvideo_vae"
layout = "v2"
crf = 10
save_latents = False
overwrite = False
