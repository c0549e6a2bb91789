"""The synthetic brain: NSD-like and GOD-like data written in the real files' layouts."""
