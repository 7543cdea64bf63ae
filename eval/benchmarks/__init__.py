"""Speed and scale benchmarks against named peers: retrieval, inference, feedback
scoring, scale. Each prints a table and writes its report where its caller says."""
