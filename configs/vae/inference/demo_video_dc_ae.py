# `make demo`: reconstruct the held-out 16-frame sample clips (centre 128x128) with the small Video DC-AE trained
# by configs/vae/train/demo_video_dc_ae.py (same model), losslessly so the metrics measure the model only.
#
#   python scripts/vae/inference.py configs/vae/inference/demo_video_dc_ae.py \
#       --model.from_pretrained outputs/demo/train/epoch*-global_step*   # a checkpoint folder of the demo run
_base_ = ["../_base_/demo_video_dc_ae_model.py", "../_base_/demo_inference_run.py"]

batch_size = 1

num_frames = 16
resolution = (128, 128)
