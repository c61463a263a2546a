"""The consumer loop that turns a spec into a running pipeline."""
from kpipe.runtime.runner import Runner, RunResult

__all__ = ["Runner", "RunResult"]
