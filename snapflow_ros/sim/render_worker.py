"""Camera frames rendered in their own thread, off the physics loop.

``RenderWorker.submit(stamp_ns)`` copies the pose of the scene as it is now (``qpos``, mocap
poses) and returns at once; the worker thread computes that pose's kinematics on its own
``MjData``, renders every camera with its own GL contexts and hands ``(stamp_ns, images)`` to
``deliver``. Physics keeps stepping meanwhile (MuJoCo releases the GIL while it renders), so a
slow camera lowers the frame rate instead of the real-time factor. One frame is in flight at a
time: a frame due while the previous one still renders is skipped (``skipped``) and the next due
frame is taken. Frames keep the sim time they were taken at, whenever they are published.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import mujoco
import numpy as np

from snapflow_ros.sim.scene import CameraRenderer, Scene

log = logging.getLogger(__name__)


class RenderWorker:
    """Renders ``scene``'s cameras of submitted poses in a daemon thread (see module doc)."""

    def __init__(self, scene: Scene,
                 deliver: Callable[[int, dict[str, np.ndarray]], None]) -> None:
        self.scene, self.deliver = scene, deliver
        self.skipped = 0
        self.render_s: list[float] = []  # per frame set, the last ~300
        self.error: BaseException | None = None
        self._data = mujoco.MjData(scene.model)
        self._pending: int | None = None  # stamp of the submitted pose, None: idle
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="render", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """True while a frame is being rendered."""
        return self._pending is not None

    def submit(self, stamp_ns: int) -> bool:
        """Take the scene's pose now for a frame stamped ``stamp_ns``; False (and counted) when
        the previous frame is still rendering. Raises the worker's error, if it failed."""
        if self.error is not None:
            raise RuntimeError(f"the render thread failed: {self.error}") from self.error
        with self._wake:
            if self._pending is not None:
                self.skipped += 1
                return False
            src, dst = self.scene.data, self._data
            dst.qpos[:] = src.qpos
            dst.mocap_pos[:] = src.mocap_pos
            dst.mocap_quat[:] = src.mocap_quat
            self._pending = stamp_ns
            self._wake.notify()
        return True

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Block until no frame is in flight (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        with self._wake:
            while self._pending is not None and self.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)
        return True

    def _run(self) -> None:
        cameras = CameraRenderer(self.scene.model, self.scene.cameras)  # GL contexts: this thread
        try:
            while True:
                with self._wake:
                    while self._pending is None and not self._stop:
                        self._wake.wait()
                    if self._stop:
                        return
                    stamp = self._pending
                assert stamp is not None
                start = time.perf_counter()
                m = self.scene.model
                mujoco.mj_kinematics(m, self._data)
                mujoco.mj_comPos(m, self._data)
                mujoco.mj_camlight(m, self._data)  # cameras on moving bodies
                images = cameras.render_all(self._data)
                self.render_s = [*self.render_s[-299:], time.perf_counter() - start]
                self.deliver(stamp, images)
                with self._wake:
                    self._pending = None
                    self._wake.notify_all()
        except BaseException as err:  # reported by the next submit; the thread ends
            log.error("render thread failed: %s", err)
            with self._wake:
                self.error, self._pending = err, None
                self._wake.notify_all()
        finally:
            cameras.close()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread after the frame in flight (its GL contexts are freed there)."""
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        self._thread.join(timeout_s)
