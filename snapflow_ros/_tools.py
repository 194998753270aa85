"""Registry of the package's executables: ``name -> "module:function"``.

One table serves ``setup.py`` (console scripts, and so ``ros2 run snapflow_ros <name>``) and
``python -m snapflow_ros <name>``. It imports nothing, so ``setup.py`` can read it before the
package's dependencies are installed.
"""

TOOLS: dict[str, str] = {
    "bench": "snapflow_ros.bench:main",
    "demo": "snapflow_ros.demo:main",
}

DESCRIPTIONS: dict[str, str] = {
    "bench": "time 1-NFE vs N-step action-chunk generation per stage (prints JSON with --json)",
    "demo": "end-to-end demo on a built-in tiny SmolVLA: train, SnapFlow-distill, save, sample",
}
