# Outputs shared by the demo inference configs (configs/vae/inference/demo_*.py): the held-out sample clips,
# reconstructed losslessly so that the metrics measure the model only; each config sets its model and clip size.
dtype = "fp32"
device = "auto"

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
