"""Choose MuJoCo's offscreen OpenGL backend before ``mujoco`` is imported.

MuJoCo reads ``MUJOCO_GL`` once, at import. An explicit setting is kept; otherwise EGL is used
when ``libEGL`` is present (Mesa's llvmpipe renders on CPU), else OSMesa when ``libOSMesa`` is,
else EGL anyway (the renderer then fails with a hint, see ``scene.RenderError``).
"""

from __future__ import annotations

import ctypes.util
import os
import sys

BACKENDS = ("egl", "osmesa")


def select_backend() -> str:
    """Set ``MUJOCO_GL`` (if unset) and return the backend in use."""
    current = os.environ.get("MUJOCO_GL", "").strip().lower()
    if current:
        return current
    if "mujoco" in sys.modules:  # too late to choose: mujoco picked its default already
        return "default"
    if ctypes.util.find_library("EGL"):
        chosen = "egl"
    elif ctypes.util.find_library("OSMesa"):
        chosen = "osmesa"
    else:
        chosen = "egl"
    os.environ["MUJOCO_GL"] = chosen
    if chosen == "osmesa":
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    return chosen
