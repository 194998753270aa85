"""Message ↔ numpy conversions on real rclpy message classes and rosbags' deserialised ones."""

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

from snapflow_ros.conversions.image import (
    ImageConversionError,
    compressed_to_rgb,
    fill_image_msg,
    image_to_rgb,
    resize_rgb,
    to_rgb,
)
from snapflow_ros.conversions.joints import JointConversionError, JointOrder
from snapflow_ros.conversions.stamps import fill_stamp, stamp_to_ns

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def _image(encoding, pixels, pad=0):
    h, w = pixels.shape[:2]
    c = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = pixels.reshape(h, w * c)
    rows = np.concatenate([rows, np.zeros((h, pad), np.uint8)], 1)  # row padding
    msg = Image(height=h, width=w, encoding=encoding, step=w * c + pad)
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings_round_trip_to_rgb(pad):
    assert np.array_equal(image_to_rgb(_image("rgb8", RGB, pad)), RGB)
    assert np.array_equal(image_to_rgb(_image("bgr8", RGB[..., ::-1].copy(), pad)), RGB)
    rgba = np.concatenate([RGB, np.full((5, 7, 1), 9, np.uint8)], 2)
    assert np.array_equal(image_to_rgb(_image("rgba8", rgba, pad)), RGB)
    bgra = np.concatenate([RGB[..., ::-1], np.full((5, 7, 1), 9, np.uint8)], 2)
    assert np.array_equal(image_to_rgb(_image("bgra8", bgra, pad)), RGB)
    mono = RGB[..., 0].copy()
    assert np.array_equal(image_to_rgb(_image("mono8", mono, pad)), np.repeat(mono[..., None], 3, 2))


def test_fill_image_msg_round_trip():
    msg = fill_image_msg(Image(), RGB)
    assert (msg.encoding, msg.step, msg.height, msg.width) == ("rgb8", 21, 5, 7)
    assert np.array_equal(image_to_rgb(msg), RGB)


def test_unknown_encoding_and_short_data_are_named():
    msg = _image("rgb8", RGB)
    msg.encoding = "16UC1"
    with pytest.raises(ImageConversionError, match="unsupported image encoding '16UC1'"):
        image_to_rgb(msg)
    short = _image("rgb8", RGB)
    short.data = bytes(10)
    with pytest.raises(ImageConversionError, match="expected step\\*height = 105"):
        image_to_rgb(short)
    bad_step = _image("rgb8", RGB)
    bad_step.step = 5
    with pytest.raises(ImageConversionError, match="step 5 is smaller"):
        image_to_rgb(bad_step)


def test_compressed_png_is_lossless_and_garbage_is_refused():
    import cv2

    ok, png = cv2.imencode(".png", RGB[..., ::-1])
    msg = CompressedImage(format="png")
    msg.data = png.tobytes()
    assert np.array_equal(compressed_to_rgb(msg), RGB)
    assert np.array_equal(to_rgb(msg), RGB)
    msg.data = b"not an image"
    with pytest.raises(ImageConversionError, match="could not decode"):
        compressed_to_rgb(msg)


def test_rosbags_messages_convert_too():
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    Img = store.types["sensor_msgs/msg/Image"]
    Header = store.types["std_msgs/msg/Header"]
    T = store.types["builtin_interfaces/msg/Time"]
    msg = Img(header=Header(stamp=T(sec=3, nanosec=5), frame_id="cam"), height=5, width=7,
              encoding="bgr8", is_bigendian=0, step=21,
              data=np.ascontiguousarray(RGB[..., ::-1]).reshape(-1))
    raw = store.serialize_cdr(msg, "sensor_msgs/msg/Image")
    back = store.deserialize_cdr(raw, "sensor_msgs/msg/Image")
    assert np.array_equal(image_to_rgb(back), RGB)
    assert stamp_to_ns(back.header.stamp) == 3_000_000_005


def test_resize():
    big = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert resize_rgb(big, 24, 32).shape == (24, 32, 3)
    assert resize_rgb(big, 96, 128).shape == (96, 128, 3)
    assert resize_rgb(big, 48, 64) is big
    flat = np.full((48, 64, 3), 77, np.uint8)
    assert np.all(resize_rgb(flat, 24, 32) == 77)


def test_joint_order_by_name_ignores_extras_and_names_missing():
    order = JointOrder(["j1", "j2", "j3"])
    out = order(["gripper", "j3", "j1", "j2"], [9.0, 3.0, 1.0, 2.0])
    assert np.array_equal(out, [1.0, 2.0, 3.0])
    with pytest.raises(JointConversionError, match=r"joint\(s\) \['j2'\] missing"):
        order(["j1", "j3"], [1.0, 3.0])
    with pytest.raises(JointConversionError, match="3 joint names but 2 values"):
        order(["j1", "j2", "j3"], [1.0, 2.0])


def test_stamps():
    t = fill_stamp(Time(), 12_345_000_000_001)
    assert (t.sec, t.nanosec) == (12345, 1)
    assert stamp_to_ns(t) == 12_345_000_000_001
