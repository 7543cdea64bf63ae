"""Evaluation: packaged suites, inference, metrics, experiment grids, reports, benchmarks."""


def __getattr__(name: str):
    if name == "run_grid":
        from eval.grid import run_grid

        return run_grid
    if name == "write_report":
        from eval.report import write_report

        return write_report
    raise AttributeError(f"module 'eval' has no attribute {name!r}")
