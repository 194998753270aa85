"""Everything that orchestrates: the closed-loop demo, closed-loop episodes, scripted sim demos,
benchmarks and teacher training. Apps may import every other layer; nothing imports apps."""
