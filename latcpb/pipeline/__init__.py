"""Runs at scale: frame blocks over worker processes or a dask.distributed cluster, resumable work folders,
many inputs (``latcpb.pipeline.runs``), built on ``latcpb.Backmapper``."""
