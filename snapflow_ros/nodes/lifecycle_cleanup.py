"""What rclpy 9's ``LifecycleNode.destroy_node`` leaves behind, destroyed.

rclpy's ``LifecycleNode`` keeps its C++ lifecycle state machine (``_state_machine``, a private
attribute) after ``destroy_node``, and the machine holds the node's handle: the node, and with
it its context's DDS participant (threads, sockets, discovery), stays alive until the garbage
collector gets to the Python object, even after the context is shut down. A process that makes
policy nodes one after another (the tests; any program that restarts one in-process) then
holds old participants that still discover and match the new ones' endpoints, and Fast DDS 3.2
can deadlock deleting an endpoint while another participant of the process runs a timer on it
(eProsima/Fast-DDS#6193, #6502; the delete holds the GIL, so no Python runs again).
"""

from __future__ import annotations

from typing import Any


def destroy_lifecycle_state_machine(node: Any) -> None:
    """Destroy ``node``'s lifecycle state machine; call it after ``destroy_node``. No-op for a
    node without one."""
    machine = getattr(node, "_state_machine", None)
    if machine is not None:
        machine.destroy_when_not_in_use()
