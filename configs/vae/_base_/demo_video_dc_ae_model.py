# The small Video DC-AE of `make demo`: 4x8x8 compression to 16 latent channels (HunyuanVideo's and Wan's latent
# size, 48x fewer values than pixels): a stride-2 input conv to width 16 (a first stage of depth 0, as in the
# image DC-AE f32c32-in, so width_list[0] builds nothing), then ResBlock stages of widths 16-32-64, time halved in
# the second and third downsamplings (~0.78M parameters). Without a block at full resolution a step is 1.6x faster
# and the model learns faster per step too (plain loop, 200 steps: 21.5 dB vs 20.1 dB with a full-resolution first
# stage; docs/benchmarks.md). DC-AE's parameter-free space-to-channel shortcuts around every down/upsampler make
# it learn fast from scratch: on the demo's clips it beat a HunyuanVideo-style KL VAE of this compression by ~3 dB
# in the same 10 minutes (docs/benchmarks.md, "Demo").
# Shared by configs/vae/train/demo_video_dc_ae.py and configs/vae/inference/demo_video_dc_ae.py so that inference
# rebuilds the trained model.
model = dict(
    type="dc_ae",
    latent_channels=16,
    width_list=(8, 16, 32, 64),
    encoder_depth_list=(0, 1, 1, 1),
    decoder_depth_list=(0, 1, 1, 1),
    encoder_block_types=("ResBlock",) * 4,
    decoder_block_types=("ResBlock",) * 4,
    temporal_downsample=(False, True, True, False),
    from_pretrained=None,  # inference: --model.from_pretrained, the demo's checkpoint folder (required)
)
