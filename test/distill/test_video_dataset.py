"""A video-storage dataset (AV1 mp4, as lerobot records by default) distils and evaluates with
the backend ``video_backend=auto`` picks here: PyAV when torchcodec's FFmpeg libraries are
missing, torchcodec when they load."""

import json

from snapflow_ros.distill.cli import main_distill
from snapflow_ros.distill.data import pick_video_backend


def test_video_dataset_distils_and_evaluates(tmp_path, make_dataset, distill_args):
    features = {
        "observation.images.front": {"dtype": "video", "shape": (24, 32, 3),
                                     "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (4,), "names": list("abcd")},
        "action": {"dtype": "float32", "shape": (4,), "names": list("abcd")},
    }
    root = make_dataset(tmp_path / "video_ds", episodes=2, features=features)
    assert list((root / "videos").rglob("*.mp4"))
    assert pick_video_backend("auto") in ("pyav", "torchcodec")
    out = tmp_path / "run"
    assert main_distill(distill_args(out, "--steps", "2", "--eval_max_samples", "4",
                                     dataset=root)) == 0
    results = json.loads((out / "eval.json").read_text())
    assert set(results) == {"teacher_10", "naive_1", "snapflow_1", "snapflow_2"}
    assert all(r["n_samples"] == 4 for r in results.values())
