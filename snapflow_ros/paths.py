"""Where the package's installed files are: ``share/snapflow_ros`` through the ament index
(colcon or a non-editable pip install with ``AMENT_PREFIX_PATH`` set), else the source tree."""

from __future__ import annotations

from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_path(*parts: str) -> Path:
    """``share/snapflow_ros/<parts>`` when installed and present, else ``<repo>/<parts>``."""
    try:
        from ament_index_python.packages import get_package_share_directory

        path = Path(get_package_share_directory("snapflow_ros")).joinpath(*parts)
        if path.exists():
            return path
    except (ImportError, LookupError, ValueError, OSError):
        pass
    return SOURCE_ROOT.joinpath(*parts)


def config_path(name: str) -> Path:
    """A packaged file under ``config/``."""
    return share_path("config", name)
