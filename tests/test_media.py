"""Image and video I/O (engines.media)."""

import subprocess

import cv2
import numpy as np
import pytest

from splinecam.engines.errors import MediaError
from splinecam.engines.media import (
    VideoReader,
    VideoWriter,
    count_frames,
    ffmpeg_exe,
    probe,
    read_image,
    write_image,
)


def _frames(n, w, h):
    """Smooth gradient frames with a bright square moving right (easy on H.264)."""
    x = np.linspace(0, 200, w)[None, :]
    y = np.linspace(0, 150, h)[:, None]
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[..., 0] = x
        f[..., 1] = y
        f[..., 2] = 60
        f[h // 4:h // 4 + 16, 4 + 4 * i:20 + 4 * i] = 255
        out.append(f)
    return out


@pytest.fixture(scope="module")
def clip_with_audio(tmp_path_factory):
    """A 1 s, 10 fps, 64×48 H.264 clip with a 440 Hz AAC track, made by FFmpeg itself."""
    path = tmp_path_factory.mktemp("media") / "with_audio.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error",
                    "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=1",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
                    str(path)], check=True)
    return path


def test_round_trip(tmp_path):
    frames = _frames(10, 96, 64)
    out = tmp_path / "nested" / "folder" / "out.mp4"  # missing folders are created
    with VideoWriter(out, fps=12.5, size=(96, 64)) as writer:
        assert not out.exists()  # written atomically, only on close
        for f in frames:
            writer.write(f)
    assert out.is_file()
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind
    reader = VideoReader(out)
    assert reader.size == (96, 64)
    assert reader.fps == pytest.approx(12.5)
    assert reader.num_frames == 10
    assert count_frames(out) == 10
    assert not reader.has_audio
    back = reader.read_all()
    assert len(back) == 10 and back[0].shape == (64, 96, 3) and back[0].dtype == np.uint8
    for a, b in zip(frames, back):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 3.0
    # Iterating again starts from the first frame; max_frames limits the list.
    assert len(reader.read_all(max_frames=4)) == 4
    assert np.array_equal(next(iter(reader)), back[0])
    info = probe(out)
    assert info["video"] and not info["audio"]
    assert info["duration"] == pytest.approx(0.8, abs=0.1)


def test_odd_size_is_padded_by_one_pixel(tmp_path):
    frames = _frames(3, 101, 75)
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, fps=25, size=(101, 75)) as writer:
        assert writer.output_size == (102, 76)
        for f in frames:
            writer.write(f)
    back = VideoReader(out).read_all()
    assert back[0].shape == (76, 102, 3)
    assert np.abs(back[1][:75, :101].astype(int) - frames[1].astype(int)).mean() < 3.0
    # The added column repeats the last one.
    assert np.abs(back[1][:75, 101].astype(int) - back[1][:75, 100].astype(int)).mean() < 3.0


def test_writer_rejects_wrong_frames(tmp_path):
    with VideoWriter(tmp_path / "x.mp4", fps=10, size=(64, 48)) as writer:
        with pytest.raises(ValueError, match="64x48"):
            writer.write(np.zeros((64, 64, 3), np.uint8))
        with pytest.raises(ValueError):
            writer.write(np.zeros((48, 64, 3), np.float32))
        writer.write(np.zeros((48, 64, 3), np.uint8))
    assert count_frames(tmp_path / "x.mp4") == 1


def test_writer_without_frames_leaves_nothing(tmp_path):
    writer = VideoWriter(tmp_path / "empty.mp4", fps=10, size=(64, 48))
    with pytest.raises(MediaError, match="empty.mp4"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_writer_unwritable_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(MediaError, match="a_file"):
        VideoWriter(blocker / "out.mp4", fps=10, size=(64, 48))


def test_audio_is_muxed(tmp_path, clip_with_audio):
    src = VideoReader(clip_with_audio)
    assert src.has_audio and src.size == (64, 48) and src.fps == pytest.approx(10)
    frames = src.read_all()
    assert len(frames) == 10
    out = tmp_path / "dubbed.mp4"
    with VideoWriter(out, fps=src.fps, size=src.size, audio_from=clip_with_audio) as writer:
        for f in frames:
            writer.write(f)
    info = probe(out)
    assert info["video"] and info["audio"]
    assert VideoReader(out).has_audio
    assert count_frames(out) == 10
    assert info["duration"] == pytest.approx(1.0, abs=0.15)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dubbed.mp4"]
    # A source without audio: the video is written, silently without audio.
    silent = tmp_path / "silent.mp4"
    no_audio = _silent_source(tmp_path)
    with VideoWriter(silent, fps=10, size=(64, 48), audio_from=no_audio) as writer:
        writer.write(frames[0])
    assert not probe(silent)["audio"]


def _silent_source(tmp_path):
    path = tmp_path / "src" / "silent_src.mp4"
    with VideoWriter(path, fps=10, size=(64, 48)) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
    return path


@pytest.mark.parametrize("name", ["fake.mp4", "fake.png"])
def test_bad_files_raise_media_error(tmp_path, name):
    bad = tmp_path / name
    bad.write_text("this is just text\n" * 20)
    # probe() reads container headers only: FFmpeg takes any .png for a picture stream.
    calls = (read_image, VideoReader, count_frames) + ((probe,) if name.endswith(".mp4") else ())
    for call in calls:
        with pytest.raises(MediaError) as err:
            call(bad)
        msg = str(err.value)
        assert name in msg and "\n" not in msg, (call.__name__, msg)


def test_missing_files_raise_media_error(tmp_path):
    missing = tmp_path / "nowhere" / "clip.mp4"
    for call in (read_image, VideoReader, count_frames, probe):
        with pytest.raises(MediaError, match="clip.mp4"):
            call(missing)


def test_read_image_formats(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 200  # red
    write_image(tmp_path / "sub" / "red.png", rgb)
    back = read_image(tmp_path / "sub" / "red.png")
    assert back.shape == (20, 30, 3) and back.dtype == np.uint8
    assert np.array_equal(back, rgb)  # RGB order kept through BGR files
    grey = np.full((10, 12), 77, np.uint8)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    assert np.array_equal(read_image(tmp_path / "grey.png"), np.full((10, 12, 3), 77, np.uint8))
    bgra = np.zeros((10, 12, 4), np.uint8)
    bgra[..., 2] = 255  # red in BGRA
    bgra[..., 3] = 128
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    img = read_image(tmp_path / "alpha.png")
    assert img.shape == (10, 12, 3) and (img[..., 0] == 255).all() and not img[..., 1:].any()
    deep = np.full((8, 8, 3), 65535, np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    img = read_image(tmp_path / "deep.png")
    assert img.dtype == np.uint8 and (img == 255).all()
    with pytest.raises(MediaError, match="bad.xyz"):
        write_image(tmp_path / "bad.xyz", rgb)
