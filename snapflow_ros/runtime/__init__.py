"""Control-rate logic without ROS or torch: observation sync (``observation``), chunk scheduling
(``chunking``), the safety gate (``safety``), hold reasons (``holds``) and the engine that ties
them together for the policy node (``engine``). numpy only; clocks are passed in."""
