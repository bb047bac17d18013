"""Recording: every raw frame and REST snapshot of the ingest into tapes `mdpipe sim --tape` replays."""

from mdpipe.record.tapes import TapeRecorder, finish_part, whole_members

__all__ = ["TapeRecorder", "finish_part", "whole_members"]
