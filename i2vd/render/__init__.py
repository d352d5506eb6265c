"""A job's request becomes a video: the backends (one contract), the MP4 writer, atomic output, the VRAM gate."""
