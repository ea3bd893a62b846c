# Reconstruct videos with the Open-Sora 1.2 VAE pipeline (SDXL 2-D VAE + temporal VAE, 4x8x8, 4 channels), as
# Open-Sora 1.2's configs/vae/inference/video.py: 17-frame 256x256 clips, bf16. Besides D/orig and D/recn it
# writes D/spatial, the 2-D VAE alone (Open-Sora 1.2's x_rec_spatial); `--layout v1.2` gives its D_ori, D_rec,
# D_spatial folders.
#
#   torchrun --nproc_per_node 8 scripts/vae/inference.py configs/vae/inference/opensora_v1_2.py \
#       --dataset.data_path DATA.csv --model.from_pretrained ./ckpts/OpenSora-VAE-v1.2
#
# from_pretrained: the hpcai-tech/OpenSora-VAE-v1.2 folder (config.json + model.safetensors) or a pipeline
# checkpoint trained with configs/vae/train/stage*.py.

dtype = "bf16"
batch_size = 1
device = "auto"

num_frames = 17
resolution = (256, 256)
sample_rate = 1  # every source frame (Open-Sora 1.2's frame_interval)
dataset = dict(
    type="video_text",
    transform_name="resize_crop",
    data_path=None,  # --dataset.data_path
)

model = dict(
    type="opensora_v1_2_vae",
    from_pretrained=None,  # --model.from_pretrained (required)
    micro_batch_size=4,  # frames per 2-D VAE call
    micro_frame_size=17,  # frames per independent temporal chunk, as the diffusion model's latents were made
)

save_dir = "samples/vae_video"
layout = "v2"
crf = 10
save_latents = False
overwrite = False
