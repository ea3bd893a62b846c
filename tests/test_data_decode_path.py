"""Decoder-side resize (``read_clip(size=...)``) against the torch path, pre-roll skipping, rotated videos."""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from data_utils import frame_indices, write_indexed_video
from opensora_ae.data import clips
from opensora_ae.data.clips import DecodedVideoCache, cut_clip, load_clip
from opensora_ae.data.datasets import SampleRequest, VideoTextDataset
from opensora_ae.data.samples import sample_video_paths
from opensora_ae.data.transforms import cover_crop_plan, resize_crop, to_model_input
from opensora_ae.data.video_io import ClipTooShortError, probe, read_clip, read_video

# Mean absolute difference between the two resize paths, in uint8 levels (docs/data.md, "Decode path").
RESIZE_TOLERANCE = 3.0


@pytest.fixture(scope="module")
def indexed_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("decode") / "indexed.mp4"
    write_indexed_video(path, 96, fps=24.0, height=48, width=80, gop_size=24)
    return path


def write_bframe_video(path, num_frames: int, gop: int) -> None:
    """A lossy libx264 video with B-frames (preset fast), a fixed keyframe interval and smooth moving content."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.height, stream.width, stream.pix_fmt = 48, 64, "yuv420p"
        stream.options = {"preset": "fast", "crf": "20", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        yy, xx = np.mgrid[:48, :64]
        for index in range(num_frames):
            phase = index / 24
            rgb = np.stack([128 + 100 * np.sin(2 * np.pi * (xx / 40 + phase)), 40 + 3 * yy + 2 * index,
                            128 + 90 * np.cos(2 * np.pi * (yy / 30 - phase))], -1).clip(0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 24)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.mark.parametrize("start,sample_rate,num_frames", [(0, 1, 8), (30, 1, 12), (37, 3, 6), (50, 5, 9)])
@pytest.mark.parametrize("size", [(32, 32), (24, 60), (64, 64)])
def test_decoder_resize_keeps_the_same_frames(indexed_video, start, sample_rate, num_frames, size):
    rng_seed = start * 7 + sample_rate
    clip = read_clip(indexed_video, num_frames, sample_rate, start, size=size, rng=np.random.default_rng(rng_seed))
    assert clip.shape == (num_frames, *size, 3) and clip.dtype == np.uint8
    # The index is in the flat R/G planes, which any resize filter keeps exactly.
    assert frame_indices(clip) == list(range(start, start + sample_rate * num_frames, sample_rate))


def test_crop_plan_is_the_one_resize_crop_uses():
    plan = cover_crop_plan(720, 1280, 256, 256, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    assert (plan.resized_h, plan.resized_w) == (256, 455)
    assert (plan.top, plan.left) == (int(rng.integers(0, 1)), int(rng.integers(0, 200)))
    assert cover_crop_plan(144, 176, 256, 256) == (256, 313, 0, 28, 256, 256)  # upscale, centre crop
    frames = np.random.default_rng(0).integers(0, 256, (2, 90, 160, 3), dtype=np.uint8)
    plan = cover_crop_plan(90, 160, 45, 45, np.random.default_rng(5))
    resized = torch.nn.functional.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float(),
                                              size=(plan.resized_h, plan.resized_w), mode="bilinear",
                                              align_corners=False, antialias=True)
    window = resized[:, :, plan.top:plan.top + 45, plan.left:plan.left + 45]
    expected = (window.permute(1, 0, 2, 3) / 127.5 - 1.0)
    actual = resize_crop(frames, 45, 45, np.random.default_rng(5))
    # resize_crop works on uint8 (rounded); the float reference differs by under one level.
    assert (actual - expected).abs().max().item() * 127.5 <= 1.0


@pytest.mark.parametrize("name,size", [("bigbuckbunny", (256, 256)), ("bikes", (64, 96)),
                                       ("carphone_pristine", (240, 160))])
def test_decoder_resize_matches_the_torch_path_on_real_clips(name, size):
    path = sample_video_paths((name,))[name]
    old = load_clip(path, 8, 2, 10, size, np.random.default_rng(1), "resize_crop_torch")
    new = load_clip(path, 8, 2, 10, size, np.random.default_rng(1), "resize_crop")
    assert old.shape == new.shape == (3, 8, *size)
    mean_levels = ((old - new).abs() * 127.5).mean().item()
    assert mean_levels <= RESIZE_TOLERANCE, f"{name}: mean abs diff {mean_levels:.2f} levels"
    again = load_clip(path, 8, 2, 10, size, np.random.default_rng(1), "resize_crop")
    assert torch.equal(new, again)  # deterministic
    # A wrong crop offset is far outside the tolerance: the check has teeth.
    shifted = load_clip(path, 8, 2, 10, (size[0], size[1]), None, "resize_crop_torch")
    if not torch.equal(shifted, old):
        assert ((shifted - new).abs() * 127.5).mean().item() > mean_levels


def test_dataset_transform_names(indexed_video):
    items = {}
    for name in ("resize_crop", "resize_crop_torch"):
        dataset = VideoTextDataset(str(indexed_video), num_frames=6, image_size=(32, 40), transform_name=name)
        items[name] = dataset[SampleRequest(0, 6, 32, 40, seed=3)]["video"]  # same start and crop
    assert items["resize_crop"].shape == items["resize_crop_torch"].shape == (3, 6, 32, 40)
    assert ((items["resize_crop"] - items["resize_crop_torch"]).abs() * 127.5).mean() <= RESIZE_TOLERANCE
    with pytest.raises(ValueError, match="transform_name 'bogus'.*resize_crop_torch"):
        VideoTextDataset(str(indexed_video), transform_name="bogus")


def test_random_crop_is_a_window_of_the_source_at_its_own_scale(indexed_video):
    full = read_clip(indexed_video, 6, 1, 10)  # T H W C uint8, 48 x 80
    seen = set()
    for seed in range(6):
        clip = load_clip(str(indexed_video), 6, 1, 10, (16, 24), np.random.default_rng(seed), "random_crop")
        rng = np.random.default_rng(seed)
        top, left = int(rng.integers(0, 48 - 16 + 1)), int(rng.integers(0, 80 - 24 + 1))  # top first, then left
        window = to_model_input(full[:, top:top + 16, left:left + 24])
        assert torch.equal(clip, window), seed
        seen.add((top, left))
    assert len(seen) == 6
    centre = load_clip(str(indexed_video), 6, 1, 10, (16, 24), None, "random_crop")
    assert torch.equal(centre, to_model_input(full[:, 16:32, 28:52]))
    # A source smaller than the window is scaled to cover it, as the torch resize path does.
    covered = load_clip(str(indexed_video), 6, 1, 10, (64, 64), None, "random_crop")
    assert torch.equal(covered, load_clip(str(indexed_video), 6, 1, 10, (64, 64), None, "resize_crop_torch"))
    dataset = VideoTextDataset(str(indexed_video), num_frames=6, image_size=(16, 24), transform_name="random_crop")
    assert dataset[SampleRequest(0, 6, 16, 24, seed=3)]["video"].shape == (3, 6, 16, 24)


@pytest.mark.parametrize("transform_name", ["random_crop", "resize_crop_torch"])
def test_clips_cut_from_a_cached_decoded_video_equal_clips_read_from_the_file(indexed_video, transform_name):
    video = read_video(indexed_video)
    for start, interval, as_uint8 in [(0, 1, False), (10, 1, True), (33, 3, False), (96 - 6 * 5 - 1, 6, True)]:
        for seed in (None, 0, 7):
            def rng():
                return None if seed is None else np.random.default_rng(seed)  # None: the centre crop
            read = load_clip(str(indexed_video), 6, interval, start, (16, 24), rng(), transform_name, as_uint8)
            cut = cut_clip(video, str(indexed_video), 6, interval, start, (16, 24), rng(), transform_name, as_uint8)
            assert torch.equal(read, cut), (start, interval, seed)
    with pytest.raises(ClipTooShortError, match="indexed.mp4 is too short.*frame 99"):
        cut_clip(video, str(indexed_video), 6, 3, 84, (16, 24), None, transform_name)
    with pytest.raises(ValueError, match="'resize_crop' resizes while decoding"):
        cut_clip(video, str(indexed_video), 6, 1, 0, (16, 24), None, "resize_crop")


def test_decoded_cache_decodes_each_video_once_within_its_budget(indexed_video, tmp_path, monkeypatch):
    small = tmp_path / "small.mp4"
    write_indexed_video(small, 8, height=48, width=80)
    decoded = []
    monkeypatch.setattr(clips, "read_video", lambda path: decoded.append(path) or read_video(path))
    one_video = 96 * 48 * 80 * 3
    cache = DecodedVideoCache(max_bytes=one_video + 8 * 48 * 80 * 3)
    for _ in range(3):
        assert cache.get(str(indexed_video)).shape == (96, 48, 80, 3)
        assert cache.get(str(small)).shape == (8, 48, 80, 3)
    assert decoded == [str(indexed_video), str(small)] and cache.bytes == cache.max_bytes
    over = tmp_path / "over.mp4"
    write_indexed_video(over, 4, height=48, width=80)
    for _ in range(2):  # past the budget: decoded once, then its clips come from the file
        assert cache.get(str(over)) is None and str(over) not in cache.videos
    assert decoded == [str(indexed_video), str(small), str(over)] and cache.bytes == cache.max_bytes


def test_dataset_with_a_decoded_cache_gives_the_same_items(indexed_video):
    kwargs = dict(num_frames=6, image_size=(16, 24), transform_name="random_crop", sample_rate=2)
    plain = VideoTextDataset(str(indexed_video), **kwargs)
    cached = VideoTextDataset(str(indexed_video), decoded_cache_mib=16, **kwargs)
    for seed in range(5):
        request = SampleRequest(0, 6, 16, 24, seed=seed)
        assert torch.equal(plain[request]["video"], cached[request]["video"]), seed
    assert list(cached.decoded.videos) == [str(indexed_video)]
    tight = VideoTextDataset(str(indexed_video), decoded_cache_mib=0.01, **kwargs)  # the video does not fit
    for seed in range(3):
        request = SampleRequest(0, 6, 16, 24, seed=seed)
        assert torch.equal(plain[request]["video"], tight[request]["video"]), seed
    assert not tight.decoded.videos and tight.decoded.too_large == {str(indexed_video)}
    with pytest.raises(ValueError, match="decoded_cache_mib needs dataset.transform_name.*'resize_crop'"):
        VideoTextDataset(str(indexed_video), decoded_cache_mib=16, transform_name="resize_crop")


def test_image_resize_in_the_decoder(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "still.png")
    new = to_model_input(read_clip(tmp_path / "still.png", 1, size=(20, 20)))
    old = resize_crop(image[None], 20, 20)
    assert new.shape == old.shape == (3, 1, 20, 20)
    assert ((new - old).abs() * 127.5).mean() <= RESIZE_TOLERANCE * 4  # pure noise: the hardest case


def test_unpicked_frames_are_skipped_without_changing_the_clip(tmp_path):
    path = tmp_path / "bframes.mp4"
    write_bframe_video(path, 96, gop=48)
    reference = read_video(path)
    stats = {}
    clip = read_clip(path, 8, 1, 40, stats=stats)
    np.testing.assert_array_equal(clip, reference[40:48])  # bit-exact: skipped frames were never references
    # keyframe at 0, last wanted frame 47: without skipping the decoder yields 48 frames.
    assert stats["decoded_frames"] < 48
    for start, sample_rate, num_frames in [(44, 3, 5), (0, 2, 20), (1, 4, 20), (50, 2, 23)]:
        stats = {}
        clip = read_clip(path, num_frames, sample_rate, start, stats=stats)
        last = start + sample_rate * (num_frames - 1)
        np.testing.assert_array_equal(clip, reference[start:last + 1:sample_rate])
        # between the kept frames too: fewer decoded than the frames from the keyframe to the last one
        assert stats["decoded_frames"] < last + 1 - (48 if start >= 48 else 0)
        everything = {}
        np.testing.assert_array_equal(read_clip(path, num_frames, sample_rate, start, stats=everything,
                                                skip_unpicked=False), clip)
        assert everything["decoded_frames"] >= last + 1 - (48 if start >= 48 else 0)


def copy_with_display_rotation(source, target, degrees: int) -> None:
    """``source``'s packets, unchanged, in a new file whose stream carries a display rotation (phone footage). A
    copy, not a second encode: two x264 encodes of the same frames are not bit-identical on every CPU."""
    with av.open(str(source)) as reader, av.open(str(target), mode="w") as writer:
        video = reader.streams.video[0]
        stream = writer.add_stream_from_template(video)
        stream.set_display_rotation(degrees)
        for packet in reader.demux(video):
            if packet.dts is not None:
                packet.stream = stream
                writer.mux(packet)


@pytest.mark.parametrize("degrees,turns", [(90, 1), (180, 2), (-90, 3), (270, 3)])
def test_rotated_videos_come_back_upright(tmp_path, degrees, turns):
    # FFmpeg's display rotation is counter-clockwise (av_display_rotation_get); a player (ffmpeg -autorotate)
    # turns the picture by it: 90 -> transpose=cclock, -90 -> transpose=clock.
    plain, rotated = tmp_path / "plain.mp4", tmp_path / f"rot{degrees}.mp4"
    write_bframe_video(plain, 12, gop=12)
    copy_with_display_rotation(plain, rotated, degrees)
    coded = read_video(plain)
    upright = np.rot90(coded, turns, axes=(1, 2))
    np.testing.assert_array_equal(read_video(rotated), upright)
    np.testing.assert_array_equal(read_clip(rotated, 4, 2, 3), upright[3:11:2])
    info = probe(rotated)
    assert (info.height, info.width) == upright.shape[1:3] == ((64, 48) if turns % 2 else (48, 64))
    size = (20, 30)
    new = to_model_input(read_clip(rotated, 4, 1, 2, size=size))
    assert new.shape == (3, 4, *size)
    right = ((new - resize_crop(upright[2:6], *size)).abs() * 127.5).mean()
    upside_down = ((new - resize_crop(np.rot90(upright[2:6], 2, axes=(1, 2)), *size)).abs() * 127.5).mean()
    # Tiny, saturated synthetic frames: the chroma filters of the two paths differ more than on real
    # footage (test_decoder_resize_matches_the_torch_path_on_real_clips), the orientation far more.
    assert right <= 3 * RESIZE_TOLERANCE and right * 4 < upside_down
