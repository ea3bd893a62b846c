"""Video data pipeline: PyAV IO, transforms, datasets, buckets, samplers and the dataloader entry point."""

from opensora_ae.data.video_io import (IMAGE_EXTS, VIDEO_EXTS, ClipTooShortError, VideoInfo, VideoReadError,
                                       is_image, is_video, probe, read_clip, read_video, write_video)
from opensora_ae.data.transforms import frame_interval, resize_crop, to_uint8_frames
from opensora_ae.data.buckets import ASPECT_RATIOS, Bucket, BucketKey
from opensora_ae.data.datasets import SampleRequest, VideoTextDataset, collate_samples
from opensora_ae.data.sampler import BucketBatchSampler
from opensora_ae.data.loader import VideoDataLoader, build_dataloader
