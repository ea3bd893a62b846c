# Reconstruct videos with the released Video DC-AE of Open-Sora 2.0 (dc-ae-f32t4c128: 32x32 spatial, 4x temporal,
# 128 latent channels), as Open-Sora 2.0's configs/vae/inference/video_dc_ae.py: 512x512 clips of 96 frames at
# most 16 fps, tiled in 256-px x 32-frame tiles with 0.25 overlap, bf16.
#
#   torchrun --nproc_per_node 8 scripts/vae/inference.py configs/vae/inference/video_dc_ae.py \
#       --dataset.data_path DATA.csv --model.from_pretrained ./ckpts/F32T4C128_AE.safetensors
#   python scripts/vae/eval.py --real_video_dir samples/video_dc_ae/orig \
#       --generated_video_dir samples/video_dc_ae/recn --metric psnr ssim lpips flolpips
#
# DC-AE encodes 4k frames into k latents: num_frames must be a multiple of 4, height and width multiples of 32.

dtype = "bf16"
batch_size = 1
device = "auto"

num_frames = 96
resolution = (512, 512)  # (height, width): resize to cover, then centre crop
dataset = dict(
    type="video_text",
    transform_name="resize_crop",
    data_path=None,  # CSV (column `path`), folder or video file: --dataset.data_path
    fps_max=16,  # sources faster than 16 fps are subsampled to at most 16 fps
)

model = dict(
    type="dc_ae",
    model_name="dc-ae-f32t4c128",
    from_pretrained=None,  # --model.from_pretrained: weights file or checkpoint folder (required)
    use_spatial_tiling=True,
    use_temporal_tiling=True,
    spatial_tile_size=256,
    temporal_tile_size=32,
    tile_overlap_factor=0.25,
)

save_dir = "samples/video_dc_ae"
layout = "v2"  # D/orig, D/recn; "v1.2" writes sibling folders D_ori, D_rec
crf = 10  # libx264 quality of the written videos; 0 = lossless
save_latents = False
overwrite = False
