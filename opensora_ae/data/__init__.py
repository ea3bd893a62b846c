"""Video data pipeline: PyAV IO, transforms, datasets, buckets, samplers and the dataloader entry point."""

from opensora_ae.data.video_io import (IMAGE_EXTS, VIDEO_EXTS, ClipTooShortError, VideoInfo, VideoReadError,
                                       is_image, is_video, probe, read_clip, read_video, write_video)
