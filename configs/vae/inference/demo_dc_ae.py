# Reconstruct the held-out sample clips with the tiny Video DC-AE trained by
# configs/vae/train/demo_dc_ae.py (same model, same 8-frame 32x32 clips), losslessly so that the metrics
# measure the model only.
#
#   python scripts/vae/inference.py configs/vae/inference/demo_dc_ae.py \
#       --model.from_pretrained outputs/demo/train/epoch*-global_step*   # a checkpoint folder of the demo run

# The model is the training config's (tests/test_inference.py checks it); from_pretrained must be passed.
_base_ = ["../_base_/demo_dc_ae_model.py"]

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

save_dir = "outputs/demo/recon"
layout = "v2"
crf = 0  # lossless libx264rgb
save_latents = False
overwrite = False
