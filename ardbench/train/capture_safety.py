"""Capturing a CUDA graph so that a failed capture leaves eager training working (issue 27).

Two things ``torch.cuda.graph`` does not undo when the capture fails (read in torch's
``cuda/graphs.py`` and ATen's ``CUDAGeneratorImpl``; the GPU image runs torch 2.11):

- ``graph.__exit__`` calls ``capture_end()`` before leaving its stream context, so when
  ``cudaStreamEndCapture`` raises, the *current stream stays the capture stream*;
- the default CUDA generator enters capture mode at ``capture_begin`` and leaves it only in a
  successful ``capture_end`` (torch <= 2.12): after a failure the next eager ``torch.rand``
  raises "Offset increment outside graph capture".

:func:`capture_on` restores the stream and, after a failure, runs one trivial capture that
draws a random number and succeeds (which takes the generator out of capture mode), then
puts the generator's state back. The capture runs on the stream the warm-up ran on: autograd
puts gradient accumulation on the stream of the first backward, and a capture on another
stream can then fail (pytorch PR #64339).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["capture_on", "reset_generator_capture_mode"]


def capture_on(
    graph: Any,
    stream: torch.cuda.Stream,
    device: torch.device,
    fn: Callable[[], dict[str, Tensor]],
) -> dict[str, Tensor]:
    """Capture ``fn()`` into ``graph`` on ``stream``; on failure restore the current stream
    and the generator, then re-raise."""
    previous = torch.cuda.current_stream(device)
    rng = torch.cuda.get_rng_state(device)
    try:
        with torch.cuda.graph(graph, stream=stream):
            return fn()
    except BaseException:
        with contextlib.suppress(Exception):
            torch.cuda.set_stream(previous)
        with contextlib.suppress(Exception):
            torch.cuda.synchronize(device)
        reset_generator_capture_mode(stream, device)
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state(rng, device)
        raise


def reset_generator_capture_mode(stream: torch.cuda.Stream, device: torch.device) -> bool:
    """One trivial capture that draws a random number and succeeds: its ``capture_end``
    takes the default generator out of capture mode. True when it succeeded."""
    previous = torch.cuda.current_stream(device)
    trivial = torch.cuda.CUDAGraph()
    try:
        scratch = torch.empty(1, device=device)
        with torch.cuda.graph(trivial, stream=stream):
            scratch.uniform_()
        return True
    except Exception:  # noqa: BLE001 - best effort: the caller re-raises the real error
        return False
    finally:
        with contextlib.suppress(Exception):
            torch.cuda.set_stream(previous)
        with contextlib.suppress(Exception):
            trivial.reset()
