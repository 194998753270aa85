"""ClockLoop / JumpSignal on a real rclpy ROS clock driven like sim time: ticks follow the
clock, a stopped loop never ticks again, and loops start and stop while another thread sets the
time (the executor's time source does that on every /clock message) without touching the
clock's rcl jump callbacks (not thread-safe)."""

import threading

import pytest
from rclpy.clock import ROSClock
from rclpy.time import Time

from snapflow_ros.nodes.clock_loop import ClockLoop, JumpSignal, next_deadline
from snapflow_ros.waiting import wait_until

MS = 1_000_000


@pytest.fixture
def sim_clock():
    clock = ROSClock()
    clock._set_ros_time_is_active(True)
    clock.set_ros_time_override(Time(nanoseconds=1_000 * MS))
    return clock


def set_time(clock, ns):
    clock.set_ros_time_override(Time(nanoseconds=ns))


def test_next_deadline_skips_missed_periods_and_restarts_when_the_clock_goes_back():
    assert next_deadline(None, 100, 10) == 110
    assert next_deadline(110, 111, 10) == 120
    assert next_deadline(110, 145, 10) == 150  # 120, 130, 140 missed: skipped, no burst
    assert next_deadline(110, 50, 10) == 60  # the clock went back: from now


def test_ticks_follow_the_sim_clock_and_stop(sim_clock):
    jumps = JumpSignal(sim_clock)
    ticks = []
    loop = ClockLoop(jumps, 10 * MS, ticks.append)
    wait_until(lambda: len(ticks) == 1, 5.0, "the first tick")
    start = ticks[0]
    for i in range(1, 6):
        set_time(sim_clock, start + i * 10 * MS)
        wait_until(lambda i=i: len(ticks) == i + 1, 5.0, f"tick {i + 1}")
    assert ticks == [start + i * 10 * MS for i in range(6)]
    set_time(sim_clock, start + 65 * MS)  # 5.5 periods on: one tick, not a burst of late ones
    wait_until(lambda: len(ticks) == 7, 5.0, "the tick after a jump")
    loop.stop()
    n = len(ticks)
    for i in range(1, 20):
        set_time(sim_clock, start + (65 + 10 * i) * MS)
    threading.Event().wait(0.1)
    assert len(ticks) == n
    jumps.close()


def test_loops_start_and_stop_while_another_thread_sets_the_time(sim_clock):
    jumps = JumpSignal(sim_clock)
    stop = threading.Event()

    def drive():
        ns = 1_000 * MS
        while not stop.is_set():
            ns += MS
            set_time(sim_clock, ns)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        for _ in range(100):
            ticks = []
            loop = ClockLoop(jumps, MS, ticks.append)
            wait_until(lambda ticks=ticks: len(ticks) >= 3, 5.0, "three ticks")
            loop.stop()
    finally:
        stop.set()
        driver.join(5.0)
    assert not driver.is_alive()
    assert not jumps._events  # every stopped loop unsubscribed
    jumps.close()
